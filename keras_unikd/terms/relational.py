"""Relational feature distillation: the relations between a batch's examples.

Similarity-preserving (SP, Tung & Mori, ICCV 2019), probabilistic knowledge
transfer (PKT, Passalis & Tefas, ECCV 2018) and relational KD (RKD, Park et
al., CVPR 2019) compare, between teacher and student, how the examples of a
batch relate to each other (similarities, distances, angles), so the two
networks' features may have any widths. Each follows the reference code,
megvii-research/mdistiller's `distillers/{SP,PKT,RKD}.py`, which produced the
published CIFAR-100 baselines.

Sample weights weight each pair `(i, j)` by `w_i w_j` (each triple of RKD's
angle loss by `w_i w_j w_k`) in the final mean, which stays divided by the
number of pairs, as `keras_unikd.losses.batch_mean` divides by the batch
size; the normalisations inside each loss (row sums, the mean distance) use
every example.
"""

import keras
from keras import ops

from keras_unikd.layers.pooling import global_pool
from keras_unikd.losses import l2_normalize
from keras_unikd.terms.base import DistillationTerm
from keras_unikd.terms.base import feature_needs
from keras_unikd.terms.base import one_layer_path
from keras_unikd.terms.base import one_path_config
from keras_unikd.validation import check_non_negative


def _flat(feature):
    """`(batch, features)` in float32: a map or tokens flattened per example."""
    feature = ops.cast(feature, "float32")
    return ops.reshape(feature, (ops.shape(feature)[0], -1))




def _weights(sample_weight, batch):
    """Per-example float32 weights `(batch,)`, ones without sample weights."""
    if sample_weight is None:
        return ops.ones((batch,), "float32")
    return ops.reshape(ops.cast(sample_weight, "float32"), (-1,))


def pair_mean(values, sample_weight=None):
    """Mean of a `(batch, batch)` matrix, each pair weighted by `w_i w_j`."""
    w = _weights(sample_weight, ops.shape(values)[0])
    return ops.mean(values * w[:, None] * w[None, :])


def _check_pairs(feature, term):
    """A clear error for a batch of one example, where there are no pairs."""
    batch = feature.shape[0]
    if batch is not None and batch < 2:
        raise ValueError(
            f"{term} compares the examples of a batch with each other and is undefined on "
            f"a batch of {batch}; use batches of 2 or more (drop_remainder=True in tf.data)."
        )


class _RelationalTerm(DistillationTerm):
    """One teacher feature and one student feature, any widths (`_loss`)."""

    # How the term reduces the teacher's feature: "pooled" (its spatial mean,
    # cacheable) or "whole".
    reads = "pooled"

    def __init__(self, teacher_feature, student_feature, weight, name, **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)
        kind = type(self).__name__
        self.teacher_features = one_layer_path(
            teacher_feature, "teacher_feature", kind, allow_auto=True
        )
        self.student_features = one_layer_path(
            student_feature, "student_feature", kind, allow_auto=True
        )

    def teacher_needs(self):
        return feature_needs(
            self,
            f"compares the teacher's whole feature {one_path_config(self.teacher_features)!r} "
            "between examples",
            pooled=self.reads == "pooled",
        )

    def choose_auto_features(self, teacher, student):
        """`"auto"`: the pooled vector (the deepest stage, pooled, for a model
        without one), or for a term that reads the whole feature (SP), the
        last stage's map, as the reference reads them."""
        kind = type(self).__name__
        for side, taps in (("teacher", teacher), ("student", student)):
            if taps is None:
                continue
            if self.reads == "pooled":
                chosen = taps.pooled_or_deepest()
            else:
                chosen = taps.require("stages", kind).deepest(1)
            setattr(self, f"{side}_features", chosen)

    def features(self, record):
        """`(student, teacher)` features as `(batch, features)` float32 matrices."""
        student = record.student_features[self.student_features[0]]
        teacher = record.teacher_features[self.teacher_features[0]]
        if self.reads == "pooled":
            student, teacher = global_pool(student), global_pool(teacher)
        _check_pairs(student, type(self).__name__)
        return _flat(student), ops.stop_gradient(_flat(teacher))

    def relation(self, student, teacher, sample_weight=None):
        """The unweighted losses, in `loss_names` order, of two `(B, D)` matrices."""
        raise NotImplementedError

    def call(self, record):
        student, teacher = self.features(record)
        return dict(zip(self.loss_names, self.relation(student, teacher, record.sample_weight)))

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_feature": one_path_config(self.teacher_features),
            "student_feature": one_path_config(self.student_features),
        }


@keras.saving.register_keras_serializable(package="keras_unikd")
class SimilarityPreserving(_RelationalTerm):
    """Similarity-preserving distillation (`sp_loss`).

    Each network's feature, flattened per example to `f` (`(B, D)`), gives
    the batch's Gram matrix `G = f f^T`, each row L2-normalised
    (`row / max(||row||, 1e-12)`), and

    `sp_loss = weight * sum_{i,j} (G_t - G_s)_{ij}^2 / B^2`.

    As the reference code (mdistiller `distillers/SP.py`), on the whole map
    of the last stage (`feats[-1]`), weight 3000 next to a cross-entropy of
    weight 1. The teacher's whole map is read, so a teacher-output cache
    cannot serve this term.

    Args:
        teacher_feature: The teacher layer path (the last stage's map), or
            `"auto"`: the last stage end that a `Distiller` finds.
        student_feature: The student layer path; any width and size; or
            `"auto"`.
        weight: Weight of the loss (3000 in the reference).
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    >>> import numpy as np
    >>> from keras_unikd import terms
    >>> sp = terms.SimilarityPreserving("t_stage3", "s_stage3")
    >>> sp.loss_names, sp.weight
    (('sp_loss',), 3000.0)
    >>> student, teacher = np.eye(3, 4, dtype="float32"), 2 * np.eye(3, 5, dtype="float32")
    >>> [float(loss) for loss in sp.relation(student, teacher)]  # the same similarities
    [0.0]
    """

    reads = "whole"

    def __init__(self, teacher_feature, student_feature, weight=3000.0, name="sp", **kwargs):
        super().__init__(teacher_feature, student_feature, weight, name, **kwargs)

    def relation(self, student, teacher, sample_weight=None):
        def gram(f):
            f = _flat(f)
            return l2_normalize(ops.matmul(f, ops.transpose(f)))

        return (pair_mean(ops.square(gram(teacher) - gram(student)), sample_weight),)


@keras.saving.register_keras_serializable(package="keras_unikd")
class ProbabilisticTransfer(_RelationalTerm):
    """Probabilistic knowledge transfer (`pkt_loss`).

    Each network's pooled feature is divided by its norm plus `eps`; the
    cosine similarities `S = f f^T` are mapped to `[0, 1]` by `(S + 1) / 2`
    and each row is divided by its sum, giving conditional probabilities `P`;
    then

    `pkt_loss = weight * mean_{i,j} P_t log((P_t + eps) / (P_s + eps))`,

    a mean over all `B^2` entries (not a sum over each row), as the reference
    code (mdistiller `distillers/PKT.py`, from passalis/probabilistic_kt)
    computes it: `eps = 1e-7`, on the pooled features, weight 30000 next to a
    cross-entropy of weight 1. The reference also sets NaNs of the
    normalised features to 0; with finite features there are none. The
    teacher's feature is read pooled, so a teacher-output cache can serve
    this term.

    Args:
        teacher_feature: The teacher layer path (pooled if it is a map), or
            `"auto"`: the pooled vector that a `Distiller` finds (the
            deepest stage when the model has none).
        student_feature: The student layer path; any width; or `"auto"`.
        weight: Weight of the loss (30000 in the reference).
        eps: The reference's `eps`, 1e-7.
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    >>> import numpy as np
    >>> from keras_unikd import terms
    >>> pkt = terms.ProbabilisticTransfer("t_pool", "s_pool")
    >>> pkt.loss_names, pkt.weight
    (('pkt_loss',), 30000.0)
    >>> f = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    >>> [round(float(loss), 6) for loss in pkt.relation(f, f)]  # the same probabilities
    [0.0]
    """

    def __init__(
        self, teacher_feature, student_feature, weight=30000.0, eps=1e-7, name="pkt", **kwargs
    ):
        super().__init__(teacher_feature, student_feature, weight, name, **kwargs)
        check_non_negative("ProbabilisticTransfer eps", eps)
        self.eps = eps

    def relation(self, student, teacher, sample_weight=None):
        def probabilities(f):
            f = _flat(f)
            f = f / (ops.sqrt(ops.sum(ops.square(f), axis=-1, keepdims=True)) + self.eps)
            similarity = (ops.matmul(f, ops.transpose(f)) + 1.0) / 2.0
            return similarity / ops.sum(similarity, axis=-1, keepdims=True)

        p_t, p_s = probabilities(teacher), probabilities(student)
        divergence = p_t * ops.log((p_t + self.eps) / (p_s + self.eps))
        return (pair_mean(divergence, sample_weight),)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


def _smooth_l1(difference):
    """Huber with beta 1: `0.5 x^2` where `|x| < 1`, else `|x| - 0.5`."""
    magnitude = ops.abs(difference)
    return ops.where(magnitude < 1.0, 0.5 * ops.square(difference), magnitude - 0.5)


@keras.saving.register_keras_serializable(package="keras_unikd")
class RelationalKD(_RelationalTerm):
    """Relational knowledge distillation: distances and angles (`rkd_distance_loss`,
    `rkd_angle_loss`).

    On each network's pooled feature `f` (`(B, D)`):

    - distances `d_ij = sqrt(max(||f_i||^2 + ||f_j||^2 - 2 f_i.f_j, eps))`
      (`d_ii = 0`; squared distances with `squared=True`), divided by the
      mean of the positive ones; `rkd_distance_loss = distance_weight *
      mean_{i,j} smooth_l1(d_s - d_t)`;
    - angles `a_ijk = e_ij . e_ik` with `e_ij = (f_j - f_i) / max(||f_j -
      f_i||, 1e-12)`; `rkd_angle_loss = angle_weight * mean_{i,j,k}
      smooth_l1(a_s - a_t)`;

    smooth L1 with beta 1; both times the term's `weight`. As the reference
    code (mdistiller `distillers/RKD.py`): distance weight 25, angle weight
    50, `eps = 1e-12`, not squared, on the pooled features, feature weight 1
    next to a cross-entropy of weight 1. The teacher's feature is read
    pooled, so a teacher-output cache can serve this term. The angle loss
    holds `B^3` entries: memory grows with the cube of the batch.

    Args:
        teacher_feature: The teacher layer path (pooled if it is a map), or
            `"auto"`: the pooled vector that a `Distiller` finds (the
            deepest stage when the model has none).
        student_feature: The student layer path; any width; or `"auto"`.
        distance_weight: Weight of the distance loss (25).
        angle_weight: Weight of the angle loss (50).
        squared: Whether distances are squared (False in the reference).
        eps: The floor of the squared distances (1e-12).
        weight: Weight of both losses (1).
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    >>> from keras_unikd import terms
    >>> rkd = terms.RelationalKD("t_pool", "s_pool")
    >>> rkd.loss_names
    ('rkd_distance_loss', 'rkd_angle_loss')
    >>> rkd.distance_weight, rkd.angle_weight
    (25.0, 50.0)
    """

    def __init__(
        self,
        teacher_feature,
        student_feature,
        distance_weight=25.0,
        angle_weight=50.0,
        squared=False,
        eps=1e-12,
        weight=1.0,
        name="rkd",
        **kwargs,
    ):
        super().__init__(teacher_feature, student_feature, weight, name, **kwargs)
        check_non_negative("RelationalKD distance_weight", distance_weight)
        check_non_negative("RelationalKD angle_weight", angle_weight)
        check_non_negative("RelationalKD eps", eps)
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight
        self.squared = bool(squared)
        self.eps = eps

    @property
    def loss_names(self):
        return (f"{self.name}_distance_loss", f"{self.name}_angle_loss")

    def distances(self, f):
        """Pairwise distances of a `(B, D)` matrix over their positive mean."""
        f = _flat(f)
        square = ops.sum(ops.square(f), axis=-1)
        product = ops.matmul(f, ops.transpose(f))
        distance = ops.maximum(square[:, None] + square[None, :] - 2.0 * product, self.eps)
        if not self.squared:
            distance = ops.sqrt(distance)
        index = ops.arange(ops.shape(f)[0])
        distance = distance * ops.cast(index[:, None] != index[None, :], "float32")
        positive = ops.cast(distance > 0, "float32")
        return distance / (ops.sum(distance * positive) / ops.maximum(ops.sum(positive), 1.0))

    @staticmethod
    def angles(f):
        """`(B, B, B)` cosines of the angles at each example `i` between `j` and `k`."""
        f = _flat(f)
        edges = f[None, :, :] - f[:, None, :]  # edges[i, j] = f_j - f_i
        edges = l2_normalize(edges)  # the zero edges j = i stay zero
        return ops.matmul(edges, ops.transpose(edges, (0, 2, 1)))

    def relation(self, student, teacher, sample_weight=None):
        distance = pair_mean(
            _smooth_l1(self.distances(student) - self.distances(teacher)), sample_weight
        )
        angle_terms = _smooth_l1(self.angles(student) - self.angles(teacher))
        w = _weights(sample_weight, ops.shape(student)[0])
        triples = w[:, None, None] * w[None, :, None] * w[None, None, :]
        return (
            self.distance_weight * distance,
            self.angle_weight * ops.mean(angle_terms * triples),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "distance_weight": self.distance_weight,
            "angle_weight": self.angle_weight,
            "squared": self.squared,
            "eps": self.eps,
        }
