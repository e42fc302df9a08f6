"""UniKD's Adaptive Features Fusion (AFF) as a Keras layer."""

import keras
from keras import ops

from keras_unikd.initializers import TorchDefaultUniform
from keras_unikd.layers.resize import resize_nearest

DEFAULT_MAX_MID_CHANNELS = 512


def _kaiming_uniform():
    # PyTorch's kaiming_uniform_(a=1): bound sqrt(3 / fan_in).
    return keras.initializers.VarianceScaling(
        scale=1.0, mode="fan_in", distribution="uniform"
    )


def as_map_shape(shape):
    """Shape of a feature seen as a channels-last map: vectors are 1x1 maps."""
    if len(shape) == 2:
        return (shape[0], 1, 1, shape[1])
    return tuple(shape)


def _as_map(feature):
    if len(feature.shape) == 2:
        return ops.expand_dims(ops.expand_dims(feature, 1), 1)
    return feature


def _pixelwise_matmul(maps, kernel):
    """`maps @ kernel` over the channel axis, as one 2-D matrix product.

    TensorFlow runs a rank-4 by rank-2 `matmul` as a `tensordot` whose
    gradient transposes the whole map; flattening the pixels first avoids it.
    """
    height, width, channels = maps.shape[1:]
    flat = ops.matmul(ops.reshape(maps, (-1, channels)), kernel)
    return ops.reshape(flat, (-1, height, width, kernel.shape[-1]))


class FusionGate(keras.layers.Layer):
    """Two spatial gates `Sigmoid(Conv1x1_{2M -> 2}(concat[h, resize(r)]))`.

    `h` is the projected stage and `r` the deeper residual at its own, lower
    resolution. The 1x1 convolution over the concatenation is computed as
    `h @ W[:M] + resize(r @ W[M:]) + b`: the same numbers (nearest resizing
    copies pixels, so it commutes with a per-pixel linear map), without
    writing or splitting a `2M`-channel map, and with the residual's half
    done at the residual's resolution.

    Kernel and bias are initialised as PyTorch's default for the reference's
    `nn.Conv2d(2M, 2, 1)`: uniform in `+-1/sqrt(2M)` (`TorchDefaultUniform`).
    """

    def build(self, mid_channels):
        fan_in = 2 * mid_channels
        self.kernel = self.add_weight(
            shape=(fan_in, 2), initializer=TorchDefaultUniform(), name="kernel"
        )
        self.bias = self.add_weight(
            shape=(2,), initializer=TorchDefaultUniform(fan_in=fan_in), name="bias"
        )
        self.built = True

    def call(self, fused, residual):
        mid = fused.shape[-1]
        residual_logits = resize_nearest(
            _pixelwise_matmul(residual, self.kernel[mid:]), fused.shape[1:3]
        )
        logits = _pixelwise_matmul(fused, self.kernel[:mid]) + residual_logits
        return ops.sigmoid(logits + self.bias)


@keras.saving.register_keras_serializable(package="keras_unikd")
class MultiStageAggregator(keras.layers.Layer):
    """Fuses features of several network stages into one map (UniKD's AFF).

    Inputs are ordered shallow to deep; they may differ in channels and
    resolution, and rank-2 vectors (e.g. a pooled feature) count as 1x1 maps.
    Fusion runs deepest first. For each stage `k` with the running residual
    `r` of the deeper stages:

    - `h = ReLU(Conv1x1(x_k))` projects to `mid_channels` (no bias);
    - except for the deepest stage, `r` is nearest-resized to `h`'s size,
      `[a, b] = Sigmoid(Conv1x1(concat[h, r]))` gives two spatial gates and
      `h = a * h + b * r`;
    - `h` becomes the residual for the next (shallower) stage.

    The last `h` is nearest-resized to `output_size` and
    `ReLU(Conv3x3(h))` produces `output_channels` (no bias). Initialisation
    follows the reference: the projections and the 3x3 convolution are
    Kaiming-uniform with `a=1` (uniform in `+-sqrt(3/fan_in)`); the gates'
    1x1 convolution (`2M -> 2`, with bias) has PyTorch's default, weights and
    biases uniform in `+-1/sqrt(2M)`. With a single input the layer is a
    projection only.
    Channels-last data only.

    Args:
        output_channels: Channels of the output map. Defaults to those of the
            shallowest input.
        output_size: `(height, width)` of the output map. Defaults to the
            shallowest input's size.
        mid_channels: Width of the fusion. Defaults to
            `min(512, channels of the deepest input)`.
        **kwargs: Base `Layer` arguments (`name`, `dtype`, ...).

    Input shape:
        A list of tensors `(batch, H_k, W_k, C_k)` or `(batch, C_k)`, shallow
        to deep.

    Output shape:
        `(batch, output_size[0], output_size[1], output_channels)`.

    Example:

    >>> import numpy as np
    >>> aggregator = MultiStageAggregator(output_channels=16)
    >>> stage1 = np.random.rand(2, 8, 8, 4).astype("float32")
    >>> stage2 = np.random.rand(2, 4, 4, 8).astype("float32")
    >>> pooled = np.random.rand(2, 32).astype("float32")
    >>> tuple(aggregator([stage1, stage2, pooled]).shape)
    (2, 8, 8, 16)
    """

    def __init__(
        self, output_channels=None, output_size=None, mid_channels=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.output_channels = output_channels
        self.output_size = tuple(output_size) if output_size is not None else None
        self.mid_channels = mid_channels

    def _validate_input_shapes(self, input_shapes):
        if not isinstance(input_shapes, (list, tuple)) or not input_shapes:
            raise ValueError(
                f"{self.__class__.__name__} expects a non-empty list of stage "
                f"features (shallow to deep); got {input_shapes!r}."
            )
        if input_shapes[0] is None or isinstance(input_shapes[0], int):
            input_shapes = [input_shapes]  # a single shape
        input_shapes = [tuple(shape) for shape in input_shapes]
        for index, shape in enumerate(input_shapes):
            if len(shape) not in (2, 4):
                raise ValueError(
                    f"Input {index} of {self.name} has shape {tuple(shape)}: "
                    "expected a channels-last map (batch, H, W, C) or a "
                    "vector (batch, C). Tap a convolutional stage or a pooled "
                    "feature instead."
                )
            if any(dim is None for dim in shape[1:]):
                raise ValueError(
                    f"Input {index} of {self.name} has shape {tuple(shape)}: "
                    "spatial size and channels must be known when the layer "
                    "is built. Give the model a fixed input shape."
                )
        return [as_map_shape(shape) for shape in input_shapes]

    def build(self, input_shape):
        map_shapes = self._validate_input_shapes(input_shape)
        shallowest, deepest = map_shapes[0], map_shapes[-1]
        self._mid = self.mid_channels or min(DEFAULT_MAX_MID_CHANNELS, deepest[-1])
        self._out_channels = self.output_channels or shallowest[-1]
        self._out_size = self.output_size or tuple(shallowest[1:3])

        self.projections = []
        self.gates = []
        for index, shape in enumerate(map_shapes):
            projection = keras.layers.Conv2D(
                self._mid,
                1,
                use_bias=False,
                kernel_initializer=_kaiming_uniform(),
                dtype=self.dtype_policy,
                name=f"projection_{index}",
            )
            projection.build(shape)
            self.projections.append(projection)
        # The deepest stage has nothing deeper to be gated against.
        for index in range(len(map_shapes) - 1):
            gate = FusionGate(dtype=self.dtype_policy, name=f"gate_{index}")
            gate.build(self._mid)
            self.gates.append(gate)
        self.output_conv = keras.layers.Conv2D(
            self._out_channels,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=_kaiming_uniform(),
            dtype=self.dtype_policy,
            name="output_conv",
        )
        self.output_conv.build((None, *self._out_size, self._mid))
        self.built = True

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        residual = None
        for index in reversed(range(len(inputs))):
            fused = ops.relu(self.projections[index](_as_map(inputs[index])))
            if residual is not None:
                weights = self.gates[index](fused, residual)
                residual = resize_nearest(residual, fused.shape[1:3])
                fused = weights[..., 0:1] * fused + weights[..., 1:2] * residual
            residual = fused
        residual = resize_nearest(residual, self._out_size)
        return ops.relu(self.output_conv(residual))

    def compute_output_shape(self, input_shape):
        shallowest = self._validate_input_shapes(input_shape)[0]
        size = self.output_size or tuple(shallowest[1:3])
        channels = self.output_channels or shallowest[-1]
        return (shallowest[0], *size, channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_channels": self.output_channels,
                "output_size": self.output_size,
                "mid_channels": self.mid_channels,
            }
        )
        return config
