"""Backend-specific `train_step` / `test_step` for the Distiller.

Keras 3 has no backend-agnostic gradient API, so the gradient step is written
once per backend; everything else (forward pass, losses, metrics) lives in
backend-agnostic methods of `keras_unikd.Distiller`.
"""

import keras

_BACKEND = keras.backend.backend()

if _BACKEND == "tensorflow":
    from keras_unikd.trainers.tensorflow import TensorFlowDistillerSteps as DistillerSteps
elif _BACKEND == "jax":
    from keras_unikd.trainers.jax import JaxDistillerSteps as DistillerSteps
else:

    class DistillerSteps:
        """Placeholder that explains which backends are supported."""

        def _unsupported(self, *args, **kwargs):
            raise NotImplementedError(
                f"keras_unikd.Distiller supports the 'tensorflow' and 'jax' "
                f"backends; the active backend is {_BACKEND!r}. Set "
                "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax."
            )

        train_step = test_step = _unsupported
