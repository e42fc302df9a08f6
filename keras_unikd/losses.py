"""Distillation losses: KD, DKD and the UniKD distribution constraints.

Every function here takes logits (or distribution parameters) of any float
dtype, computes in float32, reduces over classes and returns the mean over the
batch (optionally weighted by `sample_weight`, divided by the batch size as
Keras's `"sum_over_batch_size"` reduction does). The softmax-KL losses take
`standardize=True` for logit standardization (`standardize_logits`).
"""

import keras
from keras import ops

# DKD's non-target KL masks the target class out with this logit offset
# before the softmax (the value of the DKD reference implementation).
_TARGET_MASK_OFFSET = 1000.0

DISTRIBUTION_FORMS = ("sampled", "gaussian")
DEFAULT_LOG_VAR_RANGE = (-10.0, 10.0)

# Logit standardization divides by `epsilon + std`; the reference's epsilon.
STANDARDIZATION_EPSILON = 1e-7
# Floor of the variance under the square root: it keeps the gradient of
# `sqrt` finite for a constant logit vector (variance 0) and changes the
# standard deviation only below 1e-15, far under `STANDARDIZATION_EPSILON`.
_MIN_VARIANCE = 1e-30


def _float32(x):
    return ops.cast(x, "float32")


# torch.nn.functional.normalize's default epsilon, which the reference codes use.
NORMALIZE_EPSILON = 1e-12


def l2_normalize(x, axis=-1, epsilon=NORMALIZE_EPSILON):
    """`x / max(||x||_2, epsilon)` along `axis`, in float32 (PyTorch's `F.normalize`).

    The norm is taken as `sqrt(max(sum(x^2), epsilon^2))`, the same value,
    so that a zero vector has a finite gradient (`1 / epsilon`, as in
    PyTorch) rather than the NaN of the square root's slope at 0.

    Example:

    >>> [round(float(v), 6) for v in ops.convert_to_numpy(l2_normalize([3.0, 4.0]))]
    [0.6, 0.8]
    """
    x = _float32(x)
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x / ops.sqrt(ops.maximum(squared, epsilon * epsilon))


def batch_mean(per_example, sample_weight=None):
    """Mean over the batch of a `(batch,)` tensor, optionally weighted.

    Weighted examples are summed and divided by the batch size, as Keras's
    `"sum_over_batch_size"` reduction does.
    """
    if sample_weight is not None:
        sample_weight = ops.reshape(_float32(sample_weight), (-1,))
        per_example = per_example * sample_weight
    return ops.mean(per_example)


def _kl_from_log_probs(target_log_probs, log_probs):
    """Per-example `KL(target || other)` given log-probabilities."""
    target_probs = ops.exp(target_log_probs)
    return ops.sum(target_probs * (target_log_probs - log_probs), axis=-1)


def cross_entropy(logits, labels, sample_weight=None):
    """Sparse categorical cross-entropy on logits, in float32.

    Args:
        logits: Tensor `(batch, num_classes)`.
        labels: Integer class ids, shape `(batch,)`.
        sample_weight: Optional `(batch,)` weights.

    Returns:
        A float32 scalar.
    """
    per_example = keras.losses.sparse_categorical_crossentropy(
        labels, _float32(logits), from_logits=True
    )
    return batch_mean(per_example, sample_weight)


def standardize_logits(logits, epsilon=STANDARDIZATION_EPSILON):
    """Z-scores each logit vector over the classes (logit standardization).

    `(z - mean(z)) / (epsilon + std(z))` along the last axis, in float32, as
    in Sun et al., "Logit Standardization in Knowledge Distillation" (CVPR
    2024). `std` is the unbiased estimator (dividing by `K - 1` for `K`
    classes), as PyTorch's `Tensor.std` computes it in the reference code
    (`normalize` in `mdistiller/distillers/KD.py` and `DKD.py` of
    sunshangquan/logit-standardization-KD); `epsilon` is its `1e-7`. A
    standardized vector is invariant to `a * z + b` for `a > 0` (up to
    `epsilon`). A constant vector (std 0) becomes all zeros, with finite
    gradients (large: about `1 / epsilon`, as in the reference). Needs at
    least 2 classes.

    Args:
        logits: Tensor `(..., num_classes)` of any float dtype.
        epsilon: Added to the standard deviation before dividing.

    Returns:
        A float32 tensor of the shape of `logits`.

    Example:

    >>> import numpy as np
    >>> z = standardize_logits(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    >>> np.round(np.asarray(z), 4).tolist()
    [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    logits = _float32(logits)
    num_classes = ops.cast(ops.shape(logits)[-1], "float32")
    centered = logits - ops.mean(logits, axis=-1, keepdims=True)
    variance = ops.sum(ops.square(centered), axis=-1, keepdims=True) / (num_classes - 1.0)
    std = ops.sqrt(ops.maximum(variance, _MIN_VARIANCE))
    return centered / (epsilon + std)


def _prepare_logits(logits, standardize):
    return standardize_logits(logits) if standardize else _float32(logits)


def kd_loss(
    student_logits,
    teacher_logits,
    temperature=4.0,
    sample_weight=None,
    standardize=False,
):
    """Hinton's knowledge-distillation loss, `T^2 * KL(p_teacher || p_student)`.

    Both distributions are softmaxes of the logits divided by `temperature`;
    the `T^2` factor keeps gradient magnitudes independent of `T`. With
    `standardize=True` each logit vector is first z-scored
    (`standardize_logits`): `T^2 * KL(softmax(std(z_t) / T) ||
    softmax(std(z_s) / T))` (logit standardization, Sun et al., CVPR 2024).

    Args:
        student_logits: Tensor `(batch, num_classes)`.
        teacher_logits: Tensor `(batch, num_classes)`, the target.
        temperature: Positive float.
        sample_weight: Optional `(batch,)` weights.
        standardize: Whether to standardize both logit vectors first.

    Returns:
        A float32 scalar.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[1.0, 2.0, 3.0]])
    >>> float(kd_loss(logits, logits, temperature=4.0))
    0.0
    """
    per_example = kd_per_example(student_logits, teacher_logits, temperature, standardize)
    return batch_mean(per_example, sample_weight)


def kd_per_example(student_logits, teacher_logits, temperature=4.0, standardize=False):
    """Per-example `T^2 * KL(p_teacher || p_student)`, shape `(batch,)`.

    The unreduced form of `kd_loss` (same arguments, no `sample_weight`).
    """
    student = _prepare_logits(student_logits, standardize)
    teacher = _prepare_logits(teacher_logits, standardize)
    log_p_student = ops.log_softmax(student / temperature, axis=-1)
    log_p_teacher = ops.log_softmax(teacher / temperature, axis=-1)
    return temperature**2 * _kl_from_log_probs(log_p_teacher, log_p_student)


def _target_vs_rest_log_probs(scaled_logits, target_mask):
    """Log-probabilities of the binary event "target class" vs "any other".

    Computed with log-sum-exp so a confident teacher (probability of "rest"
    far below float32 resolution) still gives a finite, exact value.
    """
    log_normalizer = ops.logsumexp(scaled_logits, axis=-1)
    log_target = ops.sum(scaled_logits * target_mask, axis=-1) - log_normalizer
    log_rest = (
        ops.logsumexp(scaled_logits - _TARGET_MASK_OFFSET * target_mask, axis=-1)
        - log_normalizer
    )
    return ops.stack([log_target, log_rest], axis=-1)


def dkd_loss(
    student_logits,
    teacher_logits,
    labels,
    alpha=1.0,
    beta=8.0,
    temperature=4.0,
    sample_weight=None,
    standardize=False,
):
    """Decoupled knowledge distillation (Zhao et al., CVPR 2022).

    `DKD = alpha * TCKD + beta * NCKD`, each scaled by `T^2`:
    TCKD is the KL between the binary (target class vs the rest)
    distributions, NCKD the KL between the distributions over the non-target
    classes (the target logit masked out before the softmax). With
    `standardize=True` both logit vectors are z-scored over all the classes
    (`standardize_logits`) before the division by `T` and the target mask, as
    `dkd_loss` of the logit-standardization reference does
    (`mdistiller/distillers/DKD.py`).

    Args:
        student_logits: Tensor `(batch, num_classes)`.
        teacher_logits: Tensor `(batch, num_classes)`.
        labels: Integer class ids, shape `(batch,)`.
        alpha: Weight of the target-class term.
        beta: Weight of the non-target-class term.
        temperature: Positive float.
        sample_weight: Optional `(batch,)` weights.
        standardize: Whether to standardize both logit vectors first.

    Returns:
        A float32 scalar.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[3.0, 1.0, 0.0]])
    >>> float(dkd_loss(logits, logits, np.array([0])))
    0.0
    """
    student = _prepare_logits(student_logits, standardize) / temperature
    teacher = _prepare_logits(teacher_logits, standardize) / temperature
    num_classes = ops.shape(student)[-1]
    target_mask = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")

    tckd = _kl_from_log_probs(
        _target_vs_rest_log_probs(teacher, target_mask),
        _target_vs_rest_log_probs(student, target_mask),
    )
    masked_offset = _TARGET_MASK_OFFSET * target_mask
    nckd = _kl_from_log_probs(
        ops.log_softmax(teacher - masked_offset, axis=-1),
        ops.log_softmax(student - masked_offset, axis=-1),
    )
    per_example = alpha * tckd + beta * nckd
    return temperature**2 * batch_mean(per_example, sample_weight)


def gaussian_kl(
    mu_s,
    log_var_s,
    mu_t,
    log_var_t,
    log_var_range=DEFAULT_LOG_VAR_RANGE,
    sample_weight=None,
):
    """Closed-form `KL(N_teacher || N_student)` of two diagonal Gaussians.

    `0.5 * sum_k(log_var_s - log_var_t
    + (exp(log_var_t) + (mu_t - mu_s)^2) / exp(log_var_s) - 1)`, summed over
    the classes and averaged over the batch. Log-variances are clipped to
    `log_var_range` first so that `exp` stays finite in float32.

    Args:
        mu_s: Student means, `(batch, num_classes)`.
        log_var_s: Student log-variances, same shape.
        mu_t: Teacher means, same shape.
        log_var_t: Teacher log-variances, same shape.
        log_var_range: `(low, high)` clip bounds for the log-variances.
        sample_weight: Optional `(batch,)` weights.

    Returns:
        A float32 scalar, zero when both Gaussians are equal.

    Example:

    >>> import numpy as np
    >>> mu, log_var = np.zeros((2, 3)), np.zeros((2, 3))
    >>> float(gaussian_kl(mu, log_var, mu + 1.0, log_var))
    1.5
    """
    low, high = log_var_range
    log_var_s = ops.clip(_float32(log_var_s), low, high)
    log_var_t = ops.clip(_float32(log_var_t), low, high)
    mean_gap = _float32(mu_t) - _float32(mu_s)
    per_class = (
        log_var_s
        - log_var_t
        + (ops.exp(log_var_t) + ops.square(mean_gap)) * ops.exp(-log_var_s)
        - 1.0
    )
    per_example = 0.5 * ops.sum(per_class, axis=-1)
    return batch_mean(per_example, sample_weight)


def distribution_loss(
    student_distribution,
    teacher_distribution,
    form="sampled",
    temperature=1.0,
    log_var_range=DEFAULT_LOG_VAR_RANGE,
    sample_weight=None,
    standardize=False,
):
    """UniKD's feature-distribution constraint between two `DistributionHead`s.

    Args:
        student_distribution: Dict with `"mu"`, `"log_var"` and `"z"`, as
            returned by `keras_unikd.DistributionHead`.
        teacher_distribution: The same for the teacher.
        form: `"sampled"`: `kd_loss(z_student, z_teacher, temperature)`, the
            reference's constraint on one Gaussian sample per side.
            `"gaussian"`: the deterministic closed form `gaussian_kl`.
        temperature: Temperature of the sampled form.
        log_var_range: Clip bounds of the closed form.
        sample_weight: Optional `(batch,)` weights.
        standardize: Logit standardization of the samples in the sampled
            form (`kd_loss(..., standardize=True)`). It does not apply to the
            closed form, a KL between Gaussians rather than between
            softmaxes, which ignores it.

    Returns:
        A float32 scalar.

    Raises:
        ValueError: for an unknown `form`.
    """
    if form == "sampled":
        return kd_loss(
            student_distribution["z"],
            teacher_distribution["z"],
            temperature,
            sample_weight=sample_weight,
            standardize=standardize,
        )
    if form == "gaussian":
        return gaussian_kl(
            student_distribution["mu"],
            student_distribution["log_var"],
            teacher_distribution["mu"],
            teacher_distribution["log_var"],
            log_var_range=log_var_range,
            sample_weight=sample_weight,
        )
    raise ValueError(
        f"Unknown distribution form {form!r}; expected one of {DISTRIBUTION_FORMS}."
    )


def confidence_masks(teacher_logits):
    """MLKD's confidence masks from the teacher's probabilities `softmax(z)`.

    Per example, its top probability is at most the batch's median top
    probability; per class, its probability summed over the batch is at most
    the median of those sums over the classes (the median interpolates
    linearly, as NumPy's `percentile(..., 50)` in the reference code). Half
    of the examples (classes) pass, the less confident half.

    Args:
        teacher_logits: Tensor `(batch, num_classes)`.

    Returns:
        `(example_mask, class_mask)`: float32 tensors of ones and zeros,
        `(batch,)` and `(num_classes,)`, without gradient.
    """
    probs = ops.stop_gradient(ops.softmax(_float32(teacher_logits), axis=-1))
    confidence = ops.max(probs, axis=-1)
    class_confidence = ops.sum(probs, axis=0)
    example_mask = confidence <= ops.quantile(confidence, 0.5)
    class_mask = class_confidence <= ops.quantile(class_confidence, 0.5)
    return ops.cast(example_mask, "float32"), ops.cast(class_mask, "float32")


def _tempered_probs(logits, temperature):
    return ops.softmax(_float32(logits) / temperature, axis=-1)


def _weights_column(sample_weight, probs):
    if sample_weight is None:
        return ops.ones_like(probs[:, :1])
    return ops.reshape(_float32(sample_weight), (-1, 1))


def class_gram_loss(
    student_logits, teacher_logits, temperature=4.0, class_weight=None, sample_weight=None
):
    """MLKD's class-level alignment of the `K x K` class Gram matrices.

    With `P = softmax(z / T)` of shape `(batch, K)` and `G = P^T diag(w) P`
    (`w` the sample weights, ones by default), the loss of class `k` is
    `sum_l (G_t - G_s)[k, l]^2 / K`; the result is the sum over the classes,
    each weighted by `class_weight[k]` (ones by default: then it is the
    squared Frobenius distance divided by `K`, as in the reference).

    Args:
        student_logits: Tensor `(batch, K)`.
        teacher_logits: Tensor `(batch, K)`, the target.
        temperature: Positive float.
        class_weight: Optional `(K,)` weights (MLKD's class mask).
        sample_weight: Optional `(batch,)` weights.

    Returns:
        A float32 scalar.

    Example:

    >>> import numpy as np
    >>> z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    >>> float(class_gram_loss(z, z))
    0.0
    """
    p_student = _tempered_probs(student_logits, temperature)
    p_teacher = _tempered_probs(teacher_logits, temperature)
    w = _weights_column(sample_weight, p_student)
    gram_student = ops.matmul(ops.transpose(p_student * w), p_student)
    gram_teacher = ops.matmul(ops.transpose(p_teacher * w), p_teacher)
    num_classes = ops.cast(ops.shape(p_student)[-1], "float32")
    per_class = ops.sum(ops.square(gram_teacher - gram_student), axis=-1) / num_classes
    if class_weight is not None:
        per_class = per_class * _float32(class_weight)
    return ops.sum(per_class)


def batch_gram_loss(student_logits, teacher_logits, temperature=4.0, sample_weight=None):
    """MLKD's batch-level alignment of the `B x B` example Gram matrices.

    With `P = softmax(z / T)` of shape `(B, K)` and `G = P P^T`, the loss of
    example `i` is `sum_j (G_t - G_s)[i, j]^2 / B`; the result is the sum
    over the examples, each weighted by `sample_weight[i]` (ones by default:
    then it is the squared Frobenius distance divided by `B`, as in the
    reference). MLKD's example mask enters as a sample weight.

    Args:
        student_logits: Tensor `(B, K)`.
        teacher_logits: Tensor `(B, K)`, the target.
        temperature: Positive float.
        sample_weight: Optional `(B,)` weights.

    Returns:
        A float32 scalar.

    Example:

    >>> import numpy as np
    >>> z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    >>> float(batch_gram_loss(z, z))
    0.0
    """
    p_student = _tempered_probs(student_logits, temperature)
    p_teacher = _tempered_probs(teacher_logits, temperature)
    gram_student = ops.matmul(p_student, ops.transpose(p_student))
    gram_teacher = ops.matmul(p_teacher, ops.transpose(p_teacher))
    batch_size = ops.cast(ops.shape(p_student)[0], "float32")
    per_example = ops.sum(ops.square(gram_teacher - gram_student), axis=-1) / batch_size
    return batch_size * batch_mean(per_example, sample_weight)
