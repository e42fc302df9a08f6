"""Callbacks for distillation runs."""

import keras


@keras.saving.register_keras_serializable(package="keras_unikd")
class EpochCounter(keras.callbacks.Callback):
    """Tells a `keras_unikd.Distiller` which epoch is running.

    The Distiller scales its logits loss by `min(epoch / warmup_epochs, 1)`
    (epochs count from 1, as in the UniKD/DKD reference). `Distiller.fit`
    adds this callback itself; pass it explicitly only when driving training
    some other way.

    Example:

    >>> counter = EpochCounter()
    >>> isinstance(counter, keras.callbacks.Callback)
    True
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model.current_epoch.assign(float(epoch + 1))

    def get_config(self):
        return {}
