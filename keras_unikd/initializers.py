"""Initializers of the reference (PyTorch) code."""

import math

import keras

from keras_unikd.validation import check_positive_int


def _kernel_fan_in(shape):
    """Inputs per output unit of a kernel: `in * kh * kw` (conv) or `in` (dense)."""
    receptive_field = math.prod(shape[:-2])
    return int(shape[-2]) * int(receptive_field)


@keras.saving.register_keras_serializable(package="keras_unikd")
class TorchDefaultUniform(keras.initializers.Initializer):
    """PyTorch's default initialisation of `nn.Linear` and `nn.Conv2d`.

    Draws from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, the distribution that
    PyTorch gives both the weight and the bias of a linear or convolutional
    layer that nobody re-initialises. `fan_in` is the layer's kernel fan-in:
    input units for a dense kernel `(in, out)`, `kh * kw * in` for a
    channels-last convolution kernel `(kh, kw, in, out)`.

    For a kernel, leave `fan_in` unset: it is read from the shape (the bound
    is then that of `VarianceScaling(scale=1/3, mode="fan_in",
    distribution="uniform")`). A bias has no fan-in of its own, so its
    initializer is given the kernel's: `TorchDefaultUniform(fan_in=...)`.

    Args:
        fan_in: Optional positive int, the kernel fan-in that sets the bound.
            Required for a bias (a rank-1 shape); `None` reads it from the
            kernel's shape.
        seed: Optional int or `keras.random.SeedGenerator`, as for Keras's
            random initializers: an int or `None` (unseeded) gives the same
            values at every call, a `SeedGenerator` new values at each call.

    Example:

    >>> import numpy as np
    >>> dense = keras.layers.Dense(
    ...     10,
    ...     kernel_initializer=TorchDefaultUniform(),
    ...     bias_initializer=TorchDefaultUniform(fan_in=64),
    ... )
    >>> dense.build((None, 64))
    >>> bound = 1 / np.sqrt(64)
    >>> bool(np.abs(keras.ops.convert_to_numpy(dense.bias)).max() <= bound)
    True
    """

    def __init__(self, fan_in=None, seed=None):
        check_positive_int("fan_in", fan_in, allow_none=True)
        if isinstance(seed, dict):  # A serialized `SeedGenerator`.
            seed = keras.saving.deserialize_keras_object(seed)
        self.fan_in = fan_in
        self.seed = seed
        # Keras's own initializer resolves the seed (int, None or generator).
        self._unit_uniform = keras.initializers.RandomUniform(-1.0, 1.0, seed=seed)

    def bound(self, shape):
        """The half-width `1 / sqrt(fan_in)` of the distribution for `shape`."""
        fan_in = self.fan_in
        if fan_in is None:
            if len(shape) < 2:
                raise ValueError(
                    f"TorchDefaultUniform cannot read a fan-in from shape {tuple(shape)}: "
                    "a bias has none of its own. Pass the kernel's, e.g. "
                    "TorchDefaultUniform(fan_in=in_channels * kernel_height * kernel_width)."
                )
            fan_in = _kernel_fan_in(shape)
        return 1.0 / math.sqrt(fan_in)

    def __call__(self, shape, dtype=None):
        bound = self.bound(shape)
        return keras.ops.multiply(self._unit_uniform(shape, dtype=dtype), bound)

    def get_config(self):
        seed = self.seed
        if isinstance(seed, keras.random.SeedGenerator):
            seed = keras.saving.serialize_keras_object(seed)
        return {"fan_in": self.fan_in, "seed": seed}
