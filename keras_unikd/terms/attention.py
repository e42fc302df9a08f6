"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): attention maps of several stages."""

import keras
from keras import ops

from keras_unikd import losses
from keras_unikd.terms.stages import StagePairTerm
from keras_unikd.terms.stages import pool_factors
from keras_unikd.terms.stages import pooled_pairs
from keras_unikd.validation import check_positive


def attention_map(feature, p):
    """The normalised attention map of a `(batch, H, W, C)` feature: `(batch, H * W)`.

    `a = q / max(||q||_2, 1e-12)` with `q = mean_c(f^p)`, flattened over the
    positions, in float32.
    """
    feature = ops.cast(feature, "float32")
    attention = ops.mean(ops.power(feature, p), axis=-1)
    attention = ops.reshape(attention, (ops.shape(attention)[0], -1))
    return losses.l2_normalize(attention)


@keras.saving.register_keras_serializable(package="keras_unikd")
class AttentionTransfer(StagePairTerm):
    """Attention transfer over pairs of stages (`at_loss`).

    For each pair `(teacher layer, student layer)` of tapped
    `(batch, H, W, C)` maps, the larger map is average-pooled to the
    smaller's size (by an integer factor), each becomes its attention map
    `a = q / max(||q||_2, 1e-12)`, `q = mean_c(f^p)` flattened over the
    positions, and

    `at_loss = weight * sum_pairs mean_{examples, positions} (a_s - a_t)^2`.

    This follows the reference code (megvii-research/mdistiller,
    `distillers/AT.py`, which produced the published CIFAR-100 baseline), not
    the paper's formula: the paper sums the (unsquared) L2 norms of the
    differences times `beta / 2`; the code takes the mean of the squared
    differences over the batch and the positions, with `p = 2` and weight
    1000 next to a cross-entropy of weight 1, over the stages after the stem
    (`feats[1:]`). The code pools with `adaptive_avg_pool2d` to a square of
    the smaller height; here sizes must divide each other (an error names
    them otherwise). Sample weights weight the per-example means.

    The teacher's maps are read whole (`TeacherNeeds.feature_maps`), so a
    teacher-output cache cannot serve this term.

    Args:
        teacher_features: Teacher layer paths, one per pair, or `"auto"`:
            the stage ends that a `Distiller` finds (`keras_unikd.auto_taps`),
            the deepest of each network paired.
        student_features: Student layer paths, as many, in the same order,
            or `"auto"`.
        p: The power of the activations (2 in the reference).
        weight: Weight of the loss (1000 in the reference).
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    >>> import keras, numpy as np
    >>> from keras_unikd import Distiller, terms
    >>> def network(width, name):
    ...     inputs = keras.Input((8, 8, 3))
    ...     x = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
    ...                             name=f"{name}_stage1")(inputs)
    ...     x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu",
    ...                             name=f"{name}_stage2")(x)
    ...     x = keras.layers.GlobalAveragePooling2D()(x)
    ...     return keras.Model(inputs, keras.layers.Dense(4)(x), name=name)
    >>> at = terms.AttentionTransfer(["t_stage1", "t_stage2"], ["s_stage1", "s_stage2"])
    >>> distiller = Distiller(network(8, "t"), network(4, "s"), terms=[terms.CrossEntropy(), at])
    >>> distiller.loss_term_names
    ['ce_loss', 'at_loss']
    """

    teacher_maps_reason = (
        "reads the teacher's full feature maps {paths} (their attention at every position)"
    )

    def __init__(
        self, teacher_features, student_features, p=2.0, weight=1000.0, name="at", **kwargs
    ):
        super().__init__(teacher_features, student_features, weight=weight, name=name, **kwargs)
        check_positive("AttentionTransfer p", p)
        self.p = p

    def check_stage_map(self, path, shape):
        if len(shape) != 4:
            raise ValueError(
                f"AttentionTransfer reads feature maps; layer {path!r} outputs "
                f"shape {tuple(shape)}. Tap a convolutional stage."
            )

    def build(self, shapes):
        self._pools = [
            pool_factors(*pair, term="AttentionTransfer") for pair in self.paired_shapes(shapes)
        ]

    def call(self, record):
        total = 0.0
        for teacher, student in pooled_pairs(self, record, self._pools):
            difference = attention_map(student, self.p) - attention_map(teacher, self.p)
            per_example = ops.mean(ops.square(difference), axis=-1)
            total = total + losses.batch_mean(per_example, record.sample_weight)
        return {self.loss_names[0]: total}

    def get_config(self):
        return {**super().get_config(), "p": self.p}
