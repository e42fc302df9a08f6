"""DistillationWatch: a warning when distillation makes the student's cross-entropy
worse; none when it does not."""

import math
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_unikd
from conftest import make_network
from keras_unikd import losses
from keras_unikd import terms
from keras_unikd.callbacks import DistillationWatch


class WrongLabels(terms.DistillationTerm):
    """From the second epoch on, teaches the next class's label: a broken teacher."""

    def call(self, record):
        wrong = (record.labels + 1) % ops.shape(record.student_logits)[-1]
        loss = losses.cross_entropy(record.student_logits, wrong)
        return {self.loss_names[0]: ops.where(record.epoch > 1.5, loss, 0.0)}


def distiller(*extra, warmup=0):
    keras.utils.set_random_seed(0)
    return keras_unikd.Distiller(
        make_network(8, "t"),
        make_network(4, "s"),
        terms=[terms.CrossEntropy(weight=0.5), terms.KD(warmup_epochs=warmup), *extra],
    )


def watched(model, epochs):
    """The warnings of a `DistillationWatch` fed `epochs`: `(ce_loss, kd_loss)` per epoch."""
    watch = DistillationWatch()
    watch.set_model(model)
    model.planned_epochs.assign(float(len(epochs)))
    watch.on_train_begin()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch, (ce, kd) in enumerate(epochs):
            watch.on_epoch_end(epoch, {"ce_loss": ce, "kd_loss": kd, "loss": ce + kd})
    messages = [str(w.message) for w in caught]
    return [message for message in messages if "distillation is making" in message]


def test_the_rule_and_its_thresholds():
    model = distiller()
    # ce_loss is 0.5 x the student's cross-entropy: 1.0 after epoch 1.
    assert watched(model, [(0.5, 2.0), (0.4, 1.0), (0.3, 0.5)]) == []
    (message,) = watched(model, [(0.5, 2.0), (0.8, 5.0), (0.9, 9.0)])  # 1.6 > 1.5 x 1.0
    assert message.startswith("Epoch 2: distillation is making the student worse")
    assert "Term 'kd' dominates the total: kd_loss is 5" in message
    assert "Lower its weight (KD(weight=1) now)" in message
    chance = math.log(5)  # 1.609: 0.9 of it is chance level
    (message,) = watched(model, [(0.5 * 0.8 * chance, 1.0), (0.5 * 0.95 * chance, 1.0)])
    assert "1.5290" in message and "1.6094 for guessing among 5 classes" in message
    # At chance level since the first epoch: slow to learn, not made worse.
    assert watched(model, [(0.5 * chance, 1.0), (0.5 * 0.99 * chance, 1.0)]) == []


def test_nothing_is_checked_during_the_warm_up():
    model = distiller(warmup=3)
    rising = [(0.5, 1.0), (1.0, 4.0), (1.2, 4.0), (1.3, 4.0)]
    (message,) = watched(model, rising)
    assert message.startswith("Epoch 4:")  # epochs 2 and 3 are the warm-up's


def linear(name):
    inputs = keras.Input((8,))
    return keras.Model(inputs, keras.layers.Dense(5, name=f"{name}_logits")(inputs), name=name)


def fitted_warnings(*extra):
    """The watch's warnings over 4 epochs of a linear pair on separable data, and the history."""
    rng = np.random.default_rng(0)
    y = np.arange(256, dtype="int32") % 5
    x = (2.0 * np.eye(8)[y] + 0.3 * rng.standard_normal((256, 8))).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras_unikd.Distiller(
        linear("t"), linear("s"), terms=[terms.CrossEntropy(weight=0.5), terms.KD(), *extra]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=16, epochs=4, verbose=0)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return [message for message in messages if "distillation is making" in message], history


def test_a_broken_teacher_warns_once_and_training_goes_on():
    (message,), history = fitted_warnings(WrongLabels(weight=4.0, name="wrong"))
    assert message.startswith("Epoch 2: distillation is making the student worse")
    assert "Term 'wrong' dominates the total" in message
    assert "WrongLabels(weight=4) now" in message
    assert len(history.history["loss"]) == 4  # it never stops training


def test_a_healthy_distillation_does_not_warn():
    messages, history = fitted_warnings()
    assert messages == []
    assert history.history["ce_loss"][-1] < history.history["ce_loss"][0]


def test_bad_thresholds():
    with pytest.raises(ValueError, match="rise > 1"):
        DistillationWatch(rise=1.0)
    with pytest.raises(ValueError, match="0 < chance <= 1"):
        DistillationWatch(chance=1.5)


def test_mlkd_hint_names_the_level_and_the_scaling():
    mlkd = terms.MLKD(level_scaling="reference")
    assert "MLKD(class_weight=1) now" in mlkd.tuning_hint("mlkd_class_loss")
    assert "level_scaling='balanced'" in mlkd.tuning_hint("mlkd_batch_loss")
    unikd = terms.UniKDFeatures("t", "s")
    assert "feature_weight=1" in unikd.tuning_hint("feature_loss")
    assert np.isfinite(float(ops.convert_to_numpy(terms.KD().warmup_length(10))))
