"""DIST (Huang et al., NeurIPS 2022): correlations of the class probabilities."""

import keras
from keras import ops

from keras_unikd import losses
from keras_unikd.terms.base import DistillationTerm
from keras_unikd.validation import check_non_negative
from keras_unikd.validation import check_positive

# The reference's cosine: a.b / (||a|| ||b|| + 1e-8).
COSINE_EPSILON = 1e-8


def pearson(a, b, axis):
    """Pearson correlations of `a` and `b` along `axis` (centred cosines)."""
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    norms = ops.sqrt(ops.sum(ops.square(a), axis=axis)) * ops.sqrt(
        ops.sum(ops.square(b), axis=axis)
    )
    return ops.sum(a * b, axis=axis) / (norms + COSINE_EPSILON)


@keras.saving.register_keras_serializable(package="keras_unikd")
class DIST(DistillationTerm):
    """Inter- and intra-class relations of the predictions (`dist_inter_loss`,
    `dist_intra_loss`).

    With `y = softmax(z / tau)` of each network (`(B, K)`, float32) and the
    Pearson correlation `rho(a, b) = (a - mean a).(b - mean b) / (||a -
    mean a|| ||b - mean b|| + 1e-8)`:

    - `dist_inter_loss = beta * tau^2 * (1 - mean_i rho(y_s[i, :], y_t[i, :]))`:
      each example's probabilities over the classes;
    - `dist_intra_loss = gamma * tau^2 * (1 - mean_k rho(y_s[:, k], y_t[:, k]))`:
      each class's probabilities over the batch;

    both times the term's `weight`. As the authors' code
    (hunto/image_classification_sota `lib/models/losses/dist_kd.py`, which
    hunto/DIST_KD points to): `beta = gamma = 1`, `tau = 1` in its ImageNet
    runs. Sample weights weight each example's inter-class term `1 - rho`
    (summed and divided by the batch size, as `losses.batch_mean`); the
    intra-class relation compares whole columns of the batch, and every
    example counts in it.

    Args:
        beta: Weight of the inter-class relation (1).
        gamma: Weight of the intra-class relation (1).
        temperature: `tau` (> 0; 1).
        weight: Weight of both losses.
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    >>> import numpy as np
    >>> from keras_unikd import terms
    >>> dist = terms.DIST(beta=2.0, gamma=2.0, temperature=4.0)
    >>> dist.loss_names
    ('dist_inter_loss', 'dist_intra_loss')
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], "float32")
    >>> [round(float(v), 3) for v in dist.relations(logits, logits)]  # the same predictions
    [0.0, 0.0]
    """

    def __init__(self, beta=1.0, gamma=1.0, temperature=1.0, weight=1.0, name="dist", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)
        check_non_negative("DIST beta", beta)
        check_non_negative("DIST gamma", gamma)
        check_positive("DIST temperature", temperature)
        self.beta = beta
        self.gamma = gamma
        self.temperature = temperature

    @property
    def loss_names(self):
        return (f"{self.name}_inter_loss", f"{self.name}_intra_loss")

    def relations(self, student_logits, teacher_logits, sample_weight=None):
        """`(inter, intra)`: the two weighted relation losses, before `weight`."""
        scale = self.temperature**2

        def probabilities(logits):
            return ops.softmax(ops.cast(logits, "float32") / self.temperature, axis=-1)

        y_s, y_t = probabilities(student_logits), probabilities(teacher_logits)
        inter = losses.batch_mean(1.0 - pearson(y_s, y_t, axis=1), sample_weight)
        intra = 1.0 - ops.mean(pearson(y_s, y_t, axis=0))
        return self.beta * scale * inter, self.gamma * scale * intra

    def call(self, record):
        inter, intra = self.relations(
            record.student_logits, record.teacher_logits, record.sample_weight
        )
        return dict(zip(self.loss_names, (inter, intra)))

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "gamma": self.gamma,
            "temperature": self.temperature,
        }
