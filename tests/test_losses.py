import keras
import numpy as np
import pytest
from keras import ops

from keras_unikd import losses

RNG = np.random.default_rng(42)


def np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def np_softmax(x):
    return np.exp(np_log_softmax(x))


def np_kl(p, q):
    """Row-wise KL(p || q) of probability rows, 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


def np_kd(student, teacher, temperature):
    p_t = np_softmax(teacher / temperature)
    p_s = np_softmax(student / temperature)
    return temperature**2 * np_kl(p_t, p_s).mean()


def np_dkd(student, teacher, labels, alpha, beta, temperature):
    """DKD written the way its paper defines it, with probabilities."""
    mask = np.eye(student.shape[1])[labels]
    p_s = np_softmax(student / temperature)
    p_t = np_softmax(teacher / temperature)
    binary_s = np.stack([(p_s * mask).sum(1), (p_s * (1 - mask)).sum(1)], axis=1)
    binary_t = np.stack([(p_t * mask).sum(1), (p_t * (1 - mask)).sum(1)], axis=1)
    tckd = np_kl(binary_t, binary_s)
    # Non-target distributions: softmax over the classes other than the target.
    others_s = np.where(mask > 0, 0.0, p_s)
    others_t = np.where(mask > 0, 0.0, p_t)
    others_s /= others_s.sum(1, keepdims=True)
    others_t /= others_t.sum(1, keepdims=True)
    nckd = np_kl(others_t, others_s)
    return temperature**2 * (alpha * tckd + beta * nckd).mean()


def np_gaussian_kl(mu_s, lv_s, mu_t, lv_t, log_var_range=(-10.0, 10.0)):
    """The closed form, log-variances clipped to the documented default range first
    (draws of `logits()` at scale 3 pass 10 now and then)."""
    lv_s, lv_t = (np.clip(lv, *log_var_range) for lv in (lv_s, lv_t))
    terms = lv_s - lv_t + (np.exp(lv_t) + (mu_t - mu_s) ** 2) / np.exp(lv_s) - 1
    return (0.5 * terms.sum(axis=1)).mean()


def logits(shape=(8, 10), scale=3.0):
    return (RNG.standard_normal(shape) * scale).astype("float32")


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_matches_numpy(temperature):
    student, teacher = logits(), logits()
    value = ops.convert_to_numpy(losses.kd_loss(student, teacher, temperature))
    np.testing.assert_allclose(value, np_kd(student, teacher, temperature), rtol=1e-5)


def test_kd_loss_is_zero_for_identical_logits_and_positive_otherwise():
    student = logits()
    assert float(losses.kd_loss(student, student, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.kd_loss(student, logits(), 4.0)) > 0.0


@pytest.mark.parametrize("alpha,beta,temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_loss_matches_numpy(alpha, beta, temperature):
    student, teacher = logits(), logits()
    labels = RNG.integers(0, 10, size=8)
    value = losses.dkd_loss(student, teacher, labels, alpha, beta, temperature)
    expected = np_dkd(student, teacher, labels, alpha, beta, temperature)
    np.testing.assert_allclose(ops.convert_to_numpy(value), expected, rtol=1e-4)


def test_dkd_target_mask_isolates_target_logit_in_tckd():
    # Changing only the target logit of the student leaves NCKD unchanged,
    # so with alpha=0 the loss must not move.
    student, teacher = logits(), logits()
    labels = RNG.integers(0, 10, size=8)
    shifted = student.copy()
    shifted[np.arange(8), labels] += 5.0
    nckd_only = [
        float(losses.dkd_loss(s, teacher, labels, alpha=0.0, beta=1.0)) for s in (student, shifted)
    ]
    assert nckd_only[0] == pytest.approx(nckd_only[1], rel=1e-5)
    tckd_only = [
        float(losses.dkd_loss(s, teacher, labels, alpha=1.0, beta=0.0)) for s in (student, shifted)
    ]
    assert tckd_only[0] != pytest.approx(tckd_only[1], rel=1e-3)


def test_dkd_is_finite_for_a_saturated_teacher():
    teacher = np.zeros((2, 5), "float32")
    teacher[:, 0] = 200.0  # p(rest) underflows float32 in a plain softmax
    value = losses.dkd_loss(logits((2, 5)), teacher, np.array([0, 0]), temperature=1.0)
    assert np.isfinite(ops.convert_to_numpy(value))


def test_gaussian_kl_matches_numpy_and_is_zero_for_equal_gaussians():
    mu_s, mu_t = logits(scale=1.0), logits(scale=1.0)
    lv_s, lv_t = logits(scale=0.5), logits(scale=0.5)
    value = losses.gaussian_kl(mu_s, lv_s, mu_t, lv_t)
    np.testing.assert_allclose(
        ops.convert_to_numpy(value), np_gaussian_kl(mu_s, lv_s, mu_t, lv_t), rtol=1e-5
    )
    same = losses.gaussian_kl(mu_s, lv_s, mu_s, lv_s)
    assert float(same) == pytest.approx(0.0, abs=1e-6)


def test_gaussian_kl_clips_log_variances():
    mu = np.zeros((1, 3), "float32")
    huge = np.full((1, 3), 500.0, "float32")
    clipped = np.full((1, 3), 10.0, "float32")
    value = losses.gaussian_kl(mu, huge, mu, np.zeros((1, 3), "float32"))
    expected = losses.gaussian_kl(mu, clipped, mu, np.zeros((1, 3), "float32"))
    assert np.isfinite(float(value))
    assert float(value) == pytest.approx(float(expected))


def test_sampled_distribution_loss_is_kd_on_samples():
    student = {"mu": logits(), "log_var": logits(), "z": logits()}
    teacher = {"mu": logits(), "log_var": logits(), "z": logits()}
    value = losses.distribution_loss(student, teacher, form="sampled", temperature=1.0)
    np.testing.assert_allclose(
        ops.convert_to_numpy(value), np_kd(student["z"], teacher["z"], 1.0), rtol=1e-5
    )
    closed = losses.distribution_loss(student, teacher, form="gaussian")
    np.testing.assert_allclose(
        ops.convert_to_numpy(closed),
        np_gaussian_kl(student["mu"], student["log_var"], teacher["mu"], teacher["log_var"]),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="Unknown distribution form 'exact'"):
        losses.distribution_loss(student, teacher, form="exact")


def test_sample_weight_weights_examples_over_batch_size():
    student, teacher = logits((4, 6)), logits((4, 6))
    weights = np.array([1.0, 0.0, 2.0, 0.0], "float32")
    per_example = [np_kd(student[i : i + 1], teacher[i : i + 1], 2.0) for i in range(4)]
    value = losses.kd_loss(student, teacher, 2.0, sample_weight=weights)
    np.testing.assert_allclose(
        ops.convert_to_numpy(value), np.dot(weights, per_example) / 4, rtol=1e-5
    )


def test_losses_compute_in_float32_for_half_precision_inputs():
    student, teacher = logits(), logits()
    labels = RNG.integers(0, 10, size=8)
    for value in (
        losses.kd_loss(student.astype("float16"), teacher.astype("float16"), 4.0),
        losses.dkd_loss(student.astype("float16"), teacher.astype("float16"), labels),
        losses.cross_entropy(student.astype("float16"), labels),
    ):
        assert ops.convert_to_numpy(value).dtype == np.float32
    half = losses.kd_loss(student.astype("float16"), teacher.astype("float16"), 4.0)
    full = np_kd(
        student.astype("float16").astype("float32"),
        teacher.astype("float16").astype("float32"),
        4.0,
    )
    np.testing.assert_allclose(ops.convert_to_numpy(half), full, rtol=1e-5)


def test_cross_entropy_matches_numpy():
    student = logits()
    labels = RNG.integers(0, 10, size=8)
    expected = -np_log_softmax(student)[np.arange(8), labels].mean()
    np.testing.assert_allclose(
        ops.convert_to_numpy(losses.cross_entropy(student, labels)), expected, rtol=1e-5
    )


# --- logit standardization -------------------------------------------------------


def np_standardize(z):
    """Z-score over the classes with the unbiased std (PyTorch's `Tensor.std`)."""
    z = np.asarray(z, "float64")
    mean = z.mean(axis=-1, keepdims=True)
    std = z.std(axis=-1, ddof=1, keepdims=True)
    return (z - mean) / (1e-7 + std)


def gradient(fn, x):
    """d fn(x) / dx with the backend's own autodiff, as a NumPy array."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(fn)(jax.numpy.asarray(x)))
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.Variable(x)
        with tf.GradientTape() as tape:
            y = fn(x)
        return tape.gradient(y, x).numpy()
    if backend == "torch":
        import torch

        x = torch.tensor(x, requires_grad=True)
        fn(x).backward()
        return x.grad.detach().cpu().numpy()
    pytest.skip(f"no gradient helper for {backend}")


def test_standardize_logits_is_the_unbiased_z_score():
    z = logits((8, 10))
    np.testing.assert_allclose(
        ops.convert_to_numpy(losses.standardize_logits(z)), np_standardize(z), rtol=1e-5, atol=1e-6
    )
    # [1, 2, 3]: unbiased std 1 (the biased one, sqrt(2/3), would give +-1.22).
    unit = ops.convert_to_numpy(losses.standardize_logits(np.array([[1.0, 2.0, 3.0]])))
    np.testing.assert_allclose(unit, [[-1.0, 0.0, 1.0]], atol=1e-6)
    half = losses.standardize_logits(z.astype("float16"))
    assert ops.convert_to_numpy(half).dtype == np.float32


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_standardized_kd_matches_numpy(temperature):
    student, teacher = logits(), logits()
    value = losses.kd_loss(student, teacher, temperature, standardize=True)
    expected = np_kd(np_standardize(student), np_standardize(teacher), temperature)
    np.testing.assert_allclose(ops.convert_to_numpy(value), expected, rtol=1e-5)
    plain = float(losses.kd_loss(student, teacher, temperature))
    assert plain != pytest.approx(float(value), rel=1e-2)


@pytest.mark.parametrize("alpha,beta,temperature", [(1.0, 8.0, 2.0), (0.5, 2.0, 4.0)])
def test_standardized_dkd_matches_numpy(alpha, beta, temperature):
    student, teacher = logits(), logits()
    labels = RNG.integers(0, 10, size=8)
    value = losses.dkd_loss(student, teacher, labels, alpha, beta, temperature, standardize=True)
    expected = np_dkd(
        np_standardize(student), np_standardize(teacher), labels, alpha, beta, temperature
    )
    np.testing.assert_allclose(ops.convert_to_numpy(value), expected, rtol=1e-4)


def test_standardized_losses_are_zero_for_identical_logits():
    student = logits()
    labels = RNG.integers(0, 10, size=8)
    for loss in (
        losses.kd_loss(student, student, 2.0, standardize=True),
        losses.dkd_loss(student, student, labels, temperature=2.0, standardize=True),
    ):
        assert float(loss) == pytest.approx(0.0, abs=1e-6)
    # Standardization also makes a shifted and scaled copy identical.
    assert float(
        losses.kd_loss(3.0 * student + 5.0, student, 2.0, standardize=True)
    ) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("scale,shift", [(0.1, 0.0), (7.0, -3.0), (1.0, 100.0)])
def test_standardized_losses_are_scale_and_shift_invariant(scale, shift):
    student, teacher = logits(), logits()
    labels = RNG.integers(0, 10, size=8)
    kd = float(losses.kd_loss(student, teacher, 2.0, standardize=True))
    moved = float(losses.kd_loss(scale * student + shift, teacher, 2.0, standardize=True))
    assert moved == pytest.approx(kd, rel=1e-4)
    moved_teacher = float(losses.kd_loss(student, scale * teacher + shift, 2.0, standardize=True))
    assert moved_teacher == pytest.approx(kd, rel=1e-4)
    dkd = float(losses.dkd_loss(student, teacher, labels, standardize=True))
    moved = float(losses.dkd_loss(scale * student + shift, teacher, labels, standardize=True))
    assert moved == pytest.approx(dkd, rel=1e-4)
    # Without standardization the scale matters.
    if scale != 1.0:
        assert float(losses.kd_loss(scale * student, teacher, 2.0)) != pytest.approx(
            float(losses.kd_loss(student, teacher, 2.0)), rel=1e-2
        )


def test_a_constant_logit_vector_gives_a_finite_loss_and_gradient():
    constant = np.full((4, 10), 3.0, "float32")
    teacher = logits((4, 10))
    labels = np.array([0, 3, 5, 9])
    np.testing.assert_array_equal(
        ops.convert_to_numpy(losses.standardize_logits(constant)), np.zeros((4, 10))
    )
    for fn in (
        lambda s: losses.kd_loss(s, teacher, 2.0, standardize=True),
        lambda s: losses.dkd_loss(s, teacher, labels, temperature=2.0, standardize=True),
        lambda s: losses.kd_loss(s, s, 2.0, standardize=True),
    ):
        assert np.isfinite(ops.convert_to_numpy(fn(constant)))
        grad = gradient(fn, constant)
        assert grad.shape == constant.shape and np.all(np.isfinite(grad))
    # Standardized KD of a uniform student against a teacher: KL(p_t || uniform).
    p_t = np_softmax(np_standardize(teacher) / 2.0)
    expected = 4.0 * np_kl(p_t, np.full_like(p_t, 0.1)).mean()
    value = losses.kd_loss(constant, teacher, 2.0, standardize=True)
    np.testing.assert_allclose(ops.convert_to_numpy(value), expected, rtol=1e-5)


def test_standardized_kd_gradient_matches_finite_differences():
    student, teacher = logits((2, 5)), logits((2, 5))
    grad = gradient(lambda s: losses.kd_loss(s, teacher, 2.0, standardize=True), student)

    def reference(s):
        return np_kd(np_standardize(s), np_standardize(teacher), 2.0)

    step, numeric = 1e-4, np.zeros(student.shape)
    base = student.astype("float64")
    for index in np.ndindex(*student.shape):
        up, down = base.copy(), base.copy()
        up[index] += step
        down[index] -= step
        numeric[index] = (reference(up) - reference(down)) / (2 * step)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


def test_sampled_distribution_loss_standardizes_only_the_sampled_form():
    student = {"mu": logits(), "log_var": logits(), "z": logits()}
    teacher = {"mu": logits(), "log_var": logits(), "z": logits()}
    value = losses.distribution_loss(
        student, teacher, form="sampled", temperature=1.0, standardize=True
    )
    expected = np_kd(np_standardize(student["z"]), np_standardize(teacher["z"]), 1.0)
    np.testing.assert_allclose(ops.convert_to_numpy(value), expected, rtol=1e-5)
    closed = losses.distribution_loss(student, teacher, form="gaussian", standardize=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(closed),
        np_gaussian_kl(student["mu"], student["log_var"], teacher["mu"], teacher["log_var"]),
        rtol=1e-5,
    )
