"""KD-SVD (Lee, Kim & Song, ECCV 2018): singular vectors of consecutive stages,
compared through a radial basis."""

import keras
from keras import ops

from keras_unikd import losses
from keras_unikd.terms.base import AUTO_FEATURES
from keras_unikd.terms.stages import StagePairTerm
from keras_unikd.validation import check_positive_int

# The reference decomposes the student's map into k + 3 singular vectors, of
# which one is matched to each of the teacher's k.
STUDENT_EXTRA_VECTORS = 3
# exp(-d^2 / 8): the reference's radial basis.
RBF_SCALE = 8.0


def _finite(x):
    """Non-finite entries set to 0 (the reference's `removenan`)."""
    return ops.where(ops.isfinite(x), x, 0.0)


def singular_vectors(feature, count):
    """The `count` leading right singular vectors of a map, as the reference reads it.

    The `(batch, H, W, C)` map is the reference's `(batch, C * H, W)` matrix
    (a PyTorch `(C, H, W)` map viewed as `C * H` rows of `W` entries; the row
    order does not change the right singular vectors). Non-finite entries
    are set to 0, then each vector and the `count` singular values are
    L2-normalised.

    Returns:
        `(vectors, values)`: float32 `(batch, n, W)` (one vector per row)
        and `(batch, n)`, `n = min(count, C * H, W)`.
    """
    feature = ops.cast(feature, "float32")
    height, width, channels = feature.shape[1:]
    matrix = ops.reshape(ops.transpose(feature, (0, 1, 3, 2)), (-1, height * channels, width))
    _, values, vh = ops.svd(matrix, full_matrices=False)
    vectors = losses.l2_normalize(_finite(vh[:, :count, :]))
    return vectors, losses.l2_normalize(_finite(values[:, :count]))


def canonical_signs(vectors):
    """Each row of `(batch, n, W)` flipped so that its entry of largest magnitude is > 0."""
    index = ops.argmax(ops.abs(vectors), axis=-1)
    largest = ops.take_along_axis(vectors, ops.expand_dims(index, -1), axis=-1)
    return vectors * ops.where(largest < 0, -1.0, 1.0)


def align(student, teacher):
    """For each teacher vector, the student vector of largest `|cosine|`, sign-matched.

    `student` `(batch, m, W)`, `teacher` `(batch, n, W)`; returns
    `(batch, n, W)`. The choice and the sign are constants (no gradient),
    as in the reference, where they come from `torch.eq` and `torch.sign`;
    a tie keeps the sum of the tied vectors, as the reference's mask does.
    """
    cosine = ops.matmul(student, ops.transpose(teacher, (0, 2, 1)))
    magnitude = ops.abs(cosine)
    best = ops.max(magnitude, axis=1, keepdims=True)
    mask = ops.stop_gradient(ops.where(magnitude == best, ops.sign(cosine), 0.0))
    return ops.matmul(ops.transpose(mask, (0, 2, 1)), student)


def radial_basis(vectors, previous):
    """`exp(-(v[a] - p[b])^2 / 8)` for every entry `a` of `v`, `b` of `p`: `(batch, n, W, W')`."""
    difference = ops.expand_dims(vectors, 3) - ops.expand_dims(previous, 2)
    return ops.exp(-ops.square(difference) / RBF_SCALE)


@keras.saving.register_keras_serializable(package="keras_unikd")
class KDSVD(StagePairTerm):
    """Knowledge distillation with singular value decomposition (`kdsvd_loss`).

    For each pair `(teacher layer, student layer)` of tapped
    `(batch, H, W, C)` maps (shallow to deep), each example's map is read as
    the `(C * H) x W` matrix of the reference and decomposed:

    1. the teacher's `k` leading right singular vectors `v_t` (length `W`,
       L2-normalised) and singular values `sigma_t` (the `k` of them
       L2-normalised; with `k = 1`, 1); the student's `k + 3` vectors;
    2. for each teacher vector, the student vector of largest `|cosine|`
       with it, its sign flipped to agree (a constant choice: no gradient);
    3. both scaled by the teacher's `sigma_t`;
    4. from the second pair on, each network's radial basis between this
       stage's and the previous stage's vectors, over every pair of entries
       `(a, b)`: `R[a, b] = exp(-(v_i[a] - v_{i-1}[b])^2 / 8)`, and

    `kdsvd_loss = weight * sum_{i >= 1} mean_examples sum_{a, b, vectors}
    (R_s - R_t)^2`,

    with non-finite entries of the decomposition and of the squared
    differences set to 0, as in the reference. The gradient reaches the
    student through its SVD; the teacher's side is constant.

    This follows the reference code (megvii-research/mdistiller,
    `distillers/KDSVD.py`, which produced the published CIFAR-100 baseline):
    `k = 1`, feature weight 1 next to a cross-entropy of weight 1, over the
    stages after the stem (`feats[1:]`). Where it departs from the paper and
    the authors' TensorFlow code (sseung0703/SSKD_SVD), this follows the
    code: it views PyTorch's `(B, C, H, W)` map as `(B, C * H, W)`, so the
    singular vectors run over the map's width `W`, not over its channels
    (the authors read `(H * W) x C` matrices); the paired maps must
    therefore have the same width (their channels may differ), and the
    radial basis compares entries along the width. The authors also replaced
    TensorFlow's SVD gradient by their own, which zeroes non-finite values;
    the mdistiller code keeps `torch.svd`'s gradient and only zeroes
    non-finite values of the forward pass, and so does this term
    (`keras.ops.svd`, each backend's own gradient): where a student matrix
    has repeated singular values (e.g. two all-zero columns of the map),
    JAX's and PyTorch's SVD gradients are not finite, as in the reference,
    while TensorFlow's (a guarded reciprocal of the gaps) stays finite.
    Singular vectors are defined up to sign, which the reference leaves to
    the SVD routine; as the sign of a teacher vector changes the radial
    basis (and the loss), each teacher vector is given here the sign that
    makes its largest-magnitude entry positive, so that every backend gives
    the same loss (the student's vectors follow the teacher's signs, step
    2). Sample weights weight the per-example sums
    (`keras_unikd.losses.batch_mean`).

    The teacher's maps are read whole (`TeacherNeeds.feature_maps`), so a
    teacher-output cache cannot serve this term.

    Args:
        teacher_features: Teacher layer paths, one per pair (two or more),
            or `"auto"`: the stage ends that a `Distiller` finds
            (`keras_unikd.auto_taps`), the deepest of each network paired.
        student_features: Student layer paths, as many, in the same order,
            or `"auto"`.
        k: Number of the teacher's singular vectors (1 in the reference).
        weight: Weight of the loss (1 in the reference).
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    >>> import numpy as np
    >>> kdsvd = KDSVD("auto", "auto")
    >>> kdsvd.loss_names, kdsvd.k, kdsvd.weight
    (('kdsvd_loss',), 1, 1.0)
    >>> f = np.random.default_rng(0).random((2, 4, 6, 3)).astype("float32")
    >>> vectors, values = singular_vectors(f, 1)
    >>> tuple(vectors.shape), [round(float(v), 4) for v in np.ravel(values)]
    ((2, 1, 6), [1.0, 1.0])
    """

    teacher_maps_reason = (
        "decomposes the teacher's full feature maps {paths} (their singular vectors)"
    )

    def __init__(self, teacher_features, student_features, k=1, weight=1.0, name="kdsvd", **kwargs):
        super().__init__(teacher_features, student_features, weight=weight, name=name, **kwargs)
        check_positive_int("KDSVD k", k)
        self.k = k

    def check_pairs(self, chosen=False):
        """Also two or more pairs: the loss compares consecutive stages."""
        super().check_pairs(chosen)
        if self.teacher_features != AUTO_FEATURES and len(self.teacher_features) < 2:
            raise ValueError(
                "KDSVD compares consecutive stages, so it needs two or more stage pairs; got "
                f"{list(self.teacher_features)}. Tap two or more stages per network (or 'auto')."
            )

    def build(self, shapes):
        for teacher_path, teacher, student_path, student in self.paired_shapes(shapes):
            if None in tuple(teacher[1:]) + tuple(student[1:]) or teacher[2] != student[2]:
                raise ValueError(
                    f"KDSVD compares singular vectors along the maps' width, which must be "
                    f"known and the same for each pair; got {teacher_path!r} {tuple(teacher)} "
                    f"and {student_path!r} {tuple(student)}. Pair stages of the same width."
                )
            vectors = min(teacher[1] * teacher[3], teacher[2])
            if self.k > vectors:
                raise ValueError(
                    f"KDSVD k={self.k} is more than the {vectors} singular vectors of "
                    f"{teacher_path!r} {tuple(teacher)} (min(H * C, W)). Lower k."
                )

    def call(self, record):
        total, previous = 0.0, None
        for teacher_path, student_path in zip(self.teacher_features, self.student_features):
            teacher, values = singular_vectors(
                ops.stop_gradient(record.teacher_features[teacher_path]), self.k
            )
            teacher = canonical_signs(teacher)
            student, _ = singular_vectors(
                record.student_features[student_path], self.k + STUDENT_EXTRA_VECTORS
            )
            scale = ops.expand_dims(values, -1)
            current = (align(student, teacher) * scale, teacher * scale)
            if previous is not None:
                student_rbf = radial_basis(current[0], previous[0])
                teacher_rbf = ops.stop_gradient(radial_basis(current[1], previous[1]))
                per_example = ops.sum(_finite(ops.square(student_rbf - teacher_rbf)), (1, 2, 3))
                total = total + losses.batch_mean(per_example, record.sample_weight)
            previous = current
        return {self.loss_names[0]: total}

    def get_config(self):
        return {**super().get_config(), "k": self.k}
