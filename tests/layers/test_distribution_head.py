import keras
import numpy as np
import pytest
from keras import ops

from keras_unikd import DistributionHead
from test_initializers import check_torch_default_uniform


def test_shapes_for_maps_and_vectors():
    head = DistributionHead(num_classes=6, seed=0)
    out = head(np.ones((3, 5, 5, 4), "float32"), training=True)
    assert sorted(out) == ["log_var", "mu", "z"]
    assert all(tuple(v.shape) == (3, 6) for v in out.values())
    vector_head = DistributionHead(num_classes=6)
    assert tuple(vector_head(np.ones((3, 4), "float32"))["z"].shape) == (3, 6)


def test_mu_and_log_var_are_dense_layers_on_the_pooled_feature():
    head = DistributionHead(num_classes=3, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 5)).astype("float32")
    out = head(x)
    pooled = x.mean(axis=(1, 2))
    kernel, bias = (ops.convert_to_numpy(w) for w in head.mean_dense.weights)
    # atol: float32 rounding of the 5-term sums, for outputs that land near 0
    # (the weights depend on the random state the tests before left).
    np.testing.assert_allclose(
        ops.convert_to_numpy(out["mu"]), pooled @ kernel + bias, rtol=1e-5, atol=1e-6
    )
    kernel, bias = (ops.convert_to_numpy(w) for w in head.log_var_dense.weights)
    np.testing.assert_allclose(
        ops.convert_to_numpy(out["log_var"]), pooled @ kernel + bias, rtol=1e-5, atol=1e-6
    )


def test_without_noise_z_equals_mu():
    head = DistributionHead(num_classes=4, seed=1)
    x = np.ones((2, 8), "float32")
    for out in (head(x, training=False), head(x, training=True, sample=False)):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(out["z"]), ops.convert_to_numpy(out["mu"])
        )


def test_sampling_follows_the_reparameterisation_and_varies_between_calls():
    head = DistributionHead(num_classes=4000, seed=1)
    x = np.ones((1, 8), "float32")
    first = head(x, training=True)
    second = head(x, training=True)
    z1, z2 = ops.convert_to_numpy(first["z"]), ops.convert_to_numpy(second["z"])
    assert not np.allclose(z1, z2)
    # eps = (z - mu) / sigma is standard normal.
    sigma = np.exp(0.5 * ops.convert_to_numpy(first["log_var"]))
    eps = (z1 - ops.convert_to_numpy(first["mu"])) / sigma
    assert abs(eps.mean()) < 0.1 and abs(eps.std() - 1.0) < 0.1


def test_same_seed_same_samples():
    x = np.ones((2, 8), "float32")
    draws = []
    for _ in range(2):
        keras.utils.set_random_seed(3)
        head = DistributionHead(num_classes=5, seed=11)
        draws.append(ops.convert_to_numpy(head(x, training=True)["z"]))
    np.testing.assert_array_equal(draws[0], draws[1])


def test_outputs_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        head = DistributionHead(num_classes=3, seed=0)
        out = head(np.ones((2, 4, 4, 8), "float16"), training=True)
        assert all(ops.convert_to_numpy(v).dtype == np.float32 for v in out.values())
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_validation_and_config():
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        DistributionHead(num_classes=0)
    head = DistributionHead(num_classes=3)
    with pytest.raises(ValueError, match=r"expects a \(batch, H, W, C\) map"):
        head.build((None, 4, 8))
    config = DistributionHead(num_classes=7, seed=3, name="h").get_config()
    clone = DistributionHead.from_config(config)
    assert (clone.num_classes, clone.seed, clone.name) == (7, 3, "h")


def test_dense_layers_have_pytorch_default_init():
    # The reference's two nn.Linear(C, K): weights and biases in +-1/sqrt(C).
    head = DistributionHead(num_classes=20_000)
    head.build((None, 4, 4, 96))
    for dense in (head.mean_dense, head.log_var_dense):
        check_torch_default_uniform(ops.convert_to_numpy(dense.kernel), 96)
        check_torch_default_uniform(ops.convert_to_numpy(dense.bias), 96)
    # Each layer draws its own values.
    assert not np.allclose(
        ops.convert_to_numpy(head.mean_dense.bias), ops.convert_to_numpy(head.log_var_dense.bias)
    )


def test_saved_and_loaded_head_keeps_its_weights(tmp_path):
    inputs = keras.Input((6,))
    model = keras.Model(inputs, DistributionHead(num_classes=3, seed=0, name="head")(inputs)["mu"])
    path = tmp_path / "head.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(1).standard_normal((2, 6)).astype("float32")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x))
    )
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
