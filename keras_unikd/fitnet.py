"""FitNet (Romero et al., ICLR 2015): point-wise feature hints, the baseline UniKD replaces."""

import keras
from keras import ops

from keras_unikd import losses as unikd_losses
from keras_unikd.distiller import LOGITS_LOSSES
from keras_unikd.distiller import Distiller
from keras_unikd.distiller import check_choice
from keras_unikd.layers.resize import resize_nearest


@keras.saving.register_keras_serializable(package="keras_unikd")
class FitNetDistiller(Distiller):
    """Distils one intermediate feature with a hint loss, optionally plus KD.

    A 1x1 convolution (the regressor, trained with the student) maps the
    student's feature to the teacher's channels; it is nearest-resized to the
    teacher's spatial size if they differ, and
    `hint_loss = hint_weight * mean((regressor(f_s) - f_t)^2)`. With
    `logits_loss="kd"` this is the "direct combination" of feature and
    logits distillation that UniKD argues against. Everything else (frozen
    teacher, one forward pass each, metrics, serialization) is the
    `Distiller`'s.

    Args:
        teacher: Trained functional or Sequential `keras.Model`.
        student: Functional or Sequential `keras.Model`.
        teacher_feature: Layer name (or `"outer/inner"` path) of the
            teacher's hint, a `(batch, H, W, C)` map.
        student_feature: Layer name of the student's guided layer.
        hint_weight: Weight of the hint loss (100 in mdistiller's CIFAR
            recipe).
        logits_loss: `None` (FitNet alone), `"kd"` or `"dkd"`.
        **kwargs: Other `Distiller` arguments (`ce_weight`,
            `temperature`, `warmup_epochs`, ...).

    Example:

    ```python
    distiller = keras_unikd.FitNetDistiller(
        teacher, student, teacher_feature="stage2", student_feature="stage2",
        logits_loss="kd", warmup_epochs=0,
    )
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        teacher_feature,
        student_feature,
        hint_weight=100.0,
        logits_loss=None,
        **kwargs,
    ):
        super().__init__(
            teacher,
            student,
            teacher_features=[teacher_feature],
            student_features=[student_feature],
            logits_loss=logits_loss,
            distribution_loss=None,
            **kwargs,
        )
        self.teacher_feature = teacher_feature
        self.student_feature = student_feature
        self.hint_weight = hint_weight

    def _validate_options(
        self, teacher_features, student_features, logits_loss, distribution_loss
    ):
        # The hint is the distillation term, so logits_loss may be None.
        check_choice("logits_loss", logits_loss, LOGITS_LOSSES + (None,))

    def _build_feature_modules(self):
        (teacher_shape,) = self._teacher_tap.feature_shapes
        (student_shape,) = self._student_tap.feature_shapes
        for name, shape in (
            (self._teacher_tap.feature_paths[0], teacher_shape),
            (self._student_tap.feature_paths[0], student_shape),
        ):
            if len(shape) != 4:
                raise ValueError(
                    f"FitNet hints are feature maps; layer {name!r} outputs "
                    f"shape {shape}. Tap a convolutional stage."
                )
        self._hint_size = teacher_shape[1:3]
        self.regressor = keras.layers.Conv2D(teacher_shape[-1], 1, name="hint_regressor")
        self.regressor.build(student_shape)

    def _feature_term_names(self):
        return ["hint_loss"]

    def _feature_terms(
        self,
        student_features,
        teacher_features,
        student_logits,
        teacher_logits,
        sample_weight,
        training,
    ):
        guided = resize_nearest(self.regressor(student_features[0]), self._hint_size)
        squared = ops.square(ops.cast(guided, "float32") - ops.cast(teacher_features[0], "float32"))
        per_example = ops.mean(squared, axis=(1, 2, 3))
        return {
            "hint_loss": self.hint_weight
            * unikd_losses.batch_mean(per_example, sample_weight)
        }

    def get_config(self):
        config = super().get_config()
        for key in ("teacher_features", "student_features", "distribution_loss"):
            del config[key]
        config.update(
            {
                "teacher_feature": self.teacher_feature,
                "student_feature": self.student_feature,
                "hint_weight": self.hint_weight,
            }
        )
        return config
