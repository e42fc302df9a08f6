import keras
import numpy as np
import pytest

from keras_unikd import analysis


def test_softmax_gaps_on_hand_made_logits():
    teacher = np.zeros((2, 2))  # softmax [0.5, 0.5]
    student = np.array([[0.0, np.log(3.0)], [0.0, 0.0]])  # [0.25, 0.75] and [0.5, 0.5]
    np.testing.assert_allclose(analysis.softmax_gaps_from_logits(teacher, student), [0.25, 0.0])


def test_empirical_cdf():
    values, fractions = analysis.empirical_cdf([0.3, 0.1, 0.2, 0.1])
    np.testing.assert_allclose(values, [0.1, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(fractions, [0.25, 0.5, 0.75, 1.0])


def test_correlation_gap_on_hand_made_logits():
    teacher = np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 1.0], [3.0, 6.0, 0.0], [4.0, 8.0, 1.0]])
    # Same inter-class structure up to affine maps of each class: no gap.
    same = teacher * np.array([2.0, 0.5, 3.0]) + 1.0
    np.testing.assert_allclose(analysis.correlation_gap_from_logits(teacher, same), 0.0, atol=1e-12)
    # Classes 0 and 1 perfectly correlated for the teacher, anti-correlated here.
    flipped = teacher.copy()
    flipped[:, 1] = -flipped[:, 1]
    gap = analysis.correlation_gap_from_logits(teacher, flipped)
    assert gap.shape == (3, 3)
    assert gap[0, 1] == pytest.approx(2.0) and gap[1, 0] == pytest.approx(2.0)
    assert gap[0, 2] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(np.diag(gap), 0.0, atol=1e-12)


def test_backend_tensors_are_accepted():
    """Outputs of a model call (under PyTorch: tensors that require grad) work
    like NumPy arrays."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    x = np.random.default_rng(0).random((8, 3)).astype("float32")
    logits = model(x)
    expected = keras.ops.convert_to_numpy(logits).astype("float64")
    np.testing.assert_allclose(analysis.softmax_gaps_from_logits(logits, logits), 0.0)
    np.testing.assert_allclose(
        analysis.correlation_gap_from_logits(logits, expected), 0.0, atol=1e-12
    )
    values, _ = analysis.empirical_cdf(keras.ops.sum(logits, axis=1))
    np.testing.assert_allclose(values, np.sort(expected.sum(1)), rtol=1e-6)


def test_model_level_functions_and_plots(tmp_path):
    inputs = keras.Input((3,))
    teacher = keras.Model(inputs, keras.layers.Dense(4, kernel_initializer="ones")(inputs))
    student = keras.Model(inputs, keras.layers.Dense(4, kernel_initializer="zeros")(inputs))
    x = np.random.default_rng(0).random((8, 3)).astype("float32")
    logits_t = analysis.predict_logits(teacher, x)
    np.testing.assert_allclose(logits_t, np.repeat(x.sum(1, keepdims=True), 4, axis=1), rtol=1e-6)
    # Both output uniform distributions (equal logits per row): zero gap.
    np.testing.assert_allclose(analysis.softmax_gaps(teacher, student, x), 0.0, atol=1e-12)
    assert analysis.correlation_gap(teacher, teacher, x).shape == (4, 4)

    history = {"val_accuracy": [0.5, 0.6], "ce_loss": [1.0, 0.8], "loss": [2.0, 1.5]}
    paths = [tmp_path / name for name in ("curves.png", "cdf.png", "corr.png")]
    analysis.plot_training_curves({"a": history, "b": history}, paths[0])
    analysis.plot_softmax_gap_cdf({"a": np.array([0.1, 0.2]), "b": np.array([0.05, 0.3])}, paths[1])
    analysis.plot_correlation_gaps(
        {"a": np.eye(3), "b": np.zeros((3, 3))}, paths[2], class_names="xyz"
    )
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
