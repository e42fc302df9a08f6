"""Neuron selectivity transfer (Huang & Wang, 2017): MMD of the normalised neurons."""

import keras
from keras import ops

from keras_unikd import losses
from keras_unikd.terms.stages import StagePairTerm
from keras_unikd.terms.stages import pool_factors
from keras_unikd.terms.stages import pooled_pairs


def neurons(feature):
    """`(batch, C, H * W)` float32: each channel's map over the positions, L2-normalised.

    `x / max(||x||_2, 1e-12)` per channel, as `torch.nn.functional.normalize`.
    """
    feature = ops.cast(feature, "float32")
    height, width, channels = feature.shape[1:]
    flat = ops.reshape(feature, (-1, height * width, channels))
    return losses.l2_normalize(ops.transpose(flat, (0, 2, 1)))


def polynomial_kernel_mean(a, b):
    """`(batch,)`: the mean over channel pairs of `(a_i . b_j)^2` (degree 2, no offset)."""
    products = ops.matmul(a, ops.transpose(b, (0, 2, 1)))
    return ops.mean(ops.square(products), axis=(1, 2))


def nst_per_example(student, teacher):
    """`(batch,)` squared MMD of two `(batch, C, positions)` sets of normalised neurons."""
    teacher = ops.stop_gradient(teacher)
    return (
        polynomial_kernel_mean(teacher, teacher)
        + polynomial_kernel_mean(student, student)
        - 2.0 * polynomial_kernel_mean(student, teacher)
    )


@keras.saving.register_keras_serializable(package="keras_unikd")
class NeuronSelectivityTransfer(StagePairTerm):
    """Neuron selectivity transfer over pairs of stages (`nst_loss`).

    For each pair `(teacher layer, student layer)` of tapped
    `(batch, H, W, C)` maps, the larger map is average-pooled to the
    smaller's size (by an integer factor); each channel `i` becomes a
    neuron `f_i`, its map over the `H * W` positions L2-normalised
    (`f / max(||f||_2, 1e-12)`), and with the polynomial kernel
    `k(x, y) = (x . y)^2`

    `MMD^2 = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j')
    - 2 mean_{i,j} k(s_j, t_i)`,

    `nst_loss = weight * sum_pairs mean_examples MMD^2`.

    Teacher and student may have different channel counts (the kernel
    compares channels). This follows the reference code
    (megvii-research/mdistiller, `distillers/NST.py`, which produced the
    published CIFAR-100 baseline): weight 50 next to a cross-entropy of
    weight 1 (the paper's `lambda / 2` folded into it), summed over the
    stages after the stem (`feats[1:]`, the stage outputs after their
    ReLU). The code detaches the teacher-teacher kernel (a constant: the
    teacher is frozen) and pools the larger map with `adaptive_avg_pool2d`
    to a square of the smaller height; here sizes must divide each other (an
    error names them otherwise). Sample weights weight the per-example MMDs
    (`keras_unikd.losses.batch_mean`).

    The teacher's maps are read whole (`TeacherNeeds.feature_maps`), so a
    teacher-output cache cannot serve this term.

    Args:
        teacher_features: Teacher layer paths, one per pair, or `"auto"`:
            the stage ends that a `Distiller` finds (`keras_unikd.auto_taps`),
            the deepest of each network paired.
        student_features: Student layer paths, as many, in the same order,
            or `"auto"`.
        weight: Weight of the loss (50 in the reference).
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    >>> import numpy as np
    >>> nst = NeuronSelectivityTransfer("auto", "auto")
    >>> nst.loss_names, nst.weight
    (('nst_loss',), 50.0)
    >>> f = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")
    >>> [round(float(v), 6) for v in nst_per_example(neurons(f), neurons(f))]
    [0.0, 0.0]
    """

    teacher_maps_reason = (
        "reads the teacher's full feature maps {paths} (each channel's map over the positions)"
    )

    def __init__(self, teacher_features, student_features, weight=50.0, name="nst", **kwargs):
        super().__init__(teacher_features, student_features, weight=weight, name=name, **kwargs)

    def build(self, shapes):
        self._pools = [
            pool_factors(*pair, term="NeuronSelectivityTransfer")
            for pair in self.paired_shapes(shapes)
        ]

    def call(self, record):
        total = 0.0
        for teacher, student in pooled_pairs(self, record, self._pools):
            per_example = nst_per_example(neurons(student), neurons(teacher))
            total = total + losses.batch_mean(per_example, record.sample_weight)
        return {self.loss_names[0]: total}
