import keras
import numpy as np
import pytest
from keras import ops

from keras_unikd.initializers import TorchDefaultUniform


def check_torch_default_uniform(values, fan_in):
    """U(-b, b) with b = 1/sqrt(fan_in): in bounds, near them, mean 0, variance b^2/3."""
    values = np.asarray(values, dtype=np.float64).ravel()
    bound = 1.0 / np.sqrt(fan_in)
    assert np.abs(values).max() <= bound * (1 + 1e-7)  # The bound rounded to float32.
    assert np.abs(values).max() > 0.98 * bound
    # Standard errors: mean b/sqrt(3n), variance about 0.9 b^2/(3 sqrt(n)).
    assert abs(values.mean()) < 5 * bound / np.sqrt(3 * values.size)
    np.testing.assert_allclose(values.var(), bound**2 / 3, rtol=5 / np.sqrt(values.size))


@pytest.mark.parametrize(
    "shape, fan_in",
    [((512, 300), 512), ((3, 3, 64, 128), 3 * 3 * 64), ((1, 1, 1000, 40), 1000)],
)
def test_kernel_fan_in_comes_from_the_shape(shape, fan_in):
    values = ops.convert_to_numpy(TorchDefaultUniform(seed=1)(shape))
    assert values.shape == shape
    check_torch_default_uniform(values, fan_in)
    # The bound is VarianceScaling(1/3, fan_in, uniform)'s.
    reference = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=1)(shape)
    assert np.abs(ops.convert_to_numpy(reference)).max() <= 1 / np.sqrt(fan_in)


def test_bias_takes_the_kernel_fan_in():
    values = ops.convert_to_numpy(TorchDefaultUniform(fan_in=50, seed=2)((100_000,)))
    check_torch_default_uniform(values, 50)
    assert values.dtype == np.float32
    half = ops.convert_to_numpy(TorchDefaultUniform(fan_in=4, seed=2)((8,), dtype="float16"))
    assert half.dtype == np.float16 and np.abs(half).max() <= 0.5


def test_seeds_behave_as_keras_initializers():
    first = ops.convert_to_numpy(TorchDefaultUniform(fan_in=9, seed=5)((20,)))
    again = ops.convert_to_numpy(TorchDefaultUniform(fan_in=9, seed=5)((20,)))
    np.testing.assert_array_equal(first, again)
    other = ops.convert_to_numpy(TorchDefaultUniform(fan_in=9, seed=6)((20,)))
    assert not np.allclose(first, other)
    generator = TorchDefaultUniform(fan_in=9, seed=keras.random.SeedGenerator(5))
    draws = [ops.convert_to_numpy(generator((20,))) for _ in range(2)]
    assert not np.allclose(draws[0], draws[1])


def test_bad_fan_in_and_a_bias_without_one_are_clear_errors():
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="fan_in must be a positive integer or None"):
            TorchDefaultUniform(fan_in=bad)
    with pytest.raises(ValueError, match=r"a bias has none of its own. Pass the kernel's"):
        TorchDefaultUniform()((10,))


def test_serialization_round_trip():
    initializer = TorchDefaultUniform(fan_in=12, seed=3)
    serialized = keras.initializers.serialize(initializer)
    assert serialized["registered_name"] == "keras_unikd>TorchDefaultUniform"
    restored = keras.initializers.deserialize(serialized)
    assert isinstance(restored, TorchDefaultUniform)
    assert restored.get_config() == {"fan_in": 12, "seed": 3}
    np.testing.assert_array_equal(
        ops.convert_to_numpy(restored((6,))), ops.convert_to_numpy(initializer((6,)))
    )
    generated = TorchDefaultUniform(seed=keras.random.SeedGenerator(4))
    restored = keras.initializers.deserialize(keras.initializers.serialize(generated))
    assert isinstance(restored.seed, keras.random.SeedGenerator)
    assert restored.get_config() == generated.get_config()
    # As a layer's initializer, inside the layer's config.
    dense = keras.layers.Dense(3, bias_initializer=TorchDefaultUniform(fan_in=7))
    clone = keras.layers.Dense.from_config(dense.get_config())
    assert clone.bias_initializer.fan_in == 7
