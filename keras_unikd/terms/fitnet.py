"""FitNet (Romero et al., ICLR 2015): point-wise feature hints, the baseline UniKD replaces."""

import keras
from keras import ops

from keras_unikd import losses
from keras_unikd.layers.resize import resize_nearest
from keras_unikd.terms.base import DistillationTerm
from keras_unikd.terms.base import feature_needs
from keras_unikd.terms.base import one_layer_path
from keras_unikd.terms.base import one_path_config


@keras.saving.register_keras_serializable(package="keras_unikd")
class FitNetHint(DistillationTerm):
    """A hint loss on one intermediate feature map (`hint_loss`).

    A 1x1 convolution (the regressor, trained with the student) maps the
    student's feature to the teacher's channels; it is nearest-resized to the
    teacher's spatial size if they differ, and
    `hint_loss = weight * mean((regressor(f_s) - f_t)^2)`.

    Args:
        teacher_feature: Teacher layer path of the hint, a `(batch, H, W, C)`
            map, or `"auto"`: the middle stage end that a `Distiller` finds
            (`keras_unikd.auto_taps`).
        student_feature: Student layer path of the guided layer, or `"auto"`.
        weight: Weight of the hint (100 in mdistiller's CIFAR recipe).
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    ```python
    distiller = keras_unikd.Distiller(
        teacher, student,
        terms=[terms.CrossEntropy(), terms.FitNetHint("stage2", "stage2")],
    )
    ```
    """

    def __init__(self, teacher_feature, student_feature, weight=100.0, name="hint", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)
        self.teacher_features = one_layer_path(
            teacher_feature, "teacher_feature", "FitNetHint", allow_auto=True
        )
        self.student_features = one_layer_path(
            student_feature, "student_feature", "FitNetHint", allow_auto=True
        )

    def teacher_needs(self):
        """Not cacheable: the hint is the teacher's whole feature map."""
        return feature_needs(
            self,
            f"matches the teacher's full feature map "
            f"{one_path_config(self.teacher_features)!r} point by point",
        )

    def choose_auto_features(self, teacher, student):
        """`"auto"`: each network's middle stage (the second of three, the
        reference's hint layer 2 of the CIFAR ResNets)."""
        for side, taps in (("teacher", teacher), ("student", student)):
            if taps is not None:
                stages = taps.require("stages", "FitNetHint").stages
                setattr(self, f"{side}_features", (stages[len(stages) // 2],))

    def build(self, shapes):
        teacher_shape = shapes.teacher[self.teacher_features[0]]
        student_shape = shapes.student[self.student_features[0]]
        for path, shape in (
            (self.teacher_features[0], teacher_shape),
            (self.student_features[0], student_shape),
        ):
            if len(shape) != 4:
                raise ValueError(
                    f"FitNet hints are feature maps; layer {path!r} outputs "
                    f"shape {tuple(shape)}. Tap a convolutional stage."
                )
        self._hint_size = tuple(teacher_shape[1:3])
        self.regressor = keras.layers.Conv2D(
            teacher_shape[-1], 1, dtype=self.dtype_policy, name="hint_regressor"
        )
        self.regressor.build(student_shape)

    def call(self, record):
        guided = resize_nearest(
            self.regressor(record.student_features[self.student_features[0]]),
            self._hint_size,
        )
        hint = ops.cast(record.teacher_features[self.teacher_features[0]], "float32")
        per_example = ops.mean(ops.square(ops.cast(guided, "float32") - hint), axis=(1, 2, 3))
        return {self.loss_names[0]: losses.batch_mean(per_example, record.sample_weight)}

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_feature": one_path_config(self.teacher_features),
            "student_feature": one_path_config(self.student_features),
        }
