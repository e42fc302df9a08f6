"""Deepest-first fusion of network stages: UniKD's Adaptive Features Fusion
(AFF, `MultiStageAggregator`) and ReviewKD's attention-based fusion block
(ABF, `FusionBlock`), one fusion step (`fuse_stage`) for both."""

import keras
from keras import ops

from keras_unikd.initializers import TorchDefaultUniform
from keras_unikd.layers.resize import resize_nearest
from keras_unikd.models.layers_util import BN_EPSILON
from keras_unikd.models.layers_util import BN_MOMENTUM

DEFAULT_MAX_MID_CHANNELS = 512


def _kaiming_uniform():
    # PyTorch's kaiming_uniform_(a=1): bound sqrt(3 / fan_in).
    return keras.initializers.VarianceScaling(
        scale=1.0, mode="fan_in", distribution="uniform"
    )


def _kaiming_conv(filters, kernel_size, dtype, name):
    """A bias-free `Conv2D` with the reference's Kaiming-uniform (a=1) kernel;
    a 3x3 one pads to keep the size."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        padding="same" if kernel_size > 1 else "valid",
        use_bias=False,
        kernel_initializer=_kaiming_uniform(),
        dtype=dtype,
        name=name,
    )


def as_map_shape(shape):
    """Shape of a feature seen as a channels-last map: vectors are 1x1 maps."""
    if len(shape) == 2:
        return (shape[0], 1, 1, shape[1])
    return tuple(shape)


def as_map(feature):
    """A feature as a channels-last map: a vector `(batch, C)` is `(batch, 1, 1, C)`."""
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


def fuse_stage(stage, residual, projection, gate, normalize=ops.relu):
    """One step of the deepest-first fusion: a stage, gated against the deeper ones.

    `h = normalize(projection(x))` (a 1x1 convolution to the mid width; a
    vector `x` is a 1x1 map); with the `residual` `r` of the deeper stages,
    `r` is nearest-resized to `h`'s size, `[a, b] = gate(h, r)` and
    `h = a * h + b * r`. `normalize` is ReLU in UniKD's AFF and batch
    normalization in ReviewKD's ABF.

    Args:
        stage: The stage's map `(batch, H, W, C)` or vector `(batch, C)`.
        residual: The fused deeper stages `(batch, H', W', M)`, or `None`
            for the deepest stage (then `gate` is unused).
        projection: The 1x1 convolution `C -> M`.
        gate: A `FusionGate` built for `M`.
        normalize: What follows the projection.

    Returns:
        The fused map `(batch, H, W, M)`, the residual of the next stage.
    """
    fused = normalize(projection(as_map(stage)))
    if residual is None:
        return fused
    weights = gate(fused, residual)
    residual = resize_nearest(residual, fused.shape[1:3])
    return weights[..., 0:1] * fused + weights[..., 1:2] * residual


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
            projection = _kaiming_conv(self._mid, 1, self.dtype_policy, f"projection_{index}")
            projection.build(shape)
            self.projections.append(projection)
        # The deepest stage has nothing deeper to be gated against.
        for index in range(len(map_shapes) - 1):
            gate = FusionGate(dtype=self.dtype_policy, name=f"gate_{index}")
            gate.build(self._mid)
            self.gates.append(gate)
        self.output_conv = _kaiming_conv(self._out_channels, 3, self.dtype_policy, "output_conv")
        self.output_conv.build((None, *self._out_size, self._mid))
        self.built = True

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        residual = None
        for index in reversed(range(len(inputs))):
            gate = self.gates[index] if residual is not None else None
            residual = fuse_stage(inputs[index], residual, self.projections[index], gate)
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


@keras.saving.register_keras_serializable(package="keras_unikd")
class FusionBlock(keras.layers.Layer):
    """One stage of the deepest-first fusion with an output of its own (ReviewKD's ABF).

    The block fuses its stage `x` with the `residual` of the deeper blocks
    (`fuse_stage`: `h = norm(Conv1x1(x))`, gated against the residual when
    `fuse`), nearest-resizes `h` to `output_size` when it differs, and
    returns `(norm(Conv3x3(h)), h)`: its output and the residual of the next
    (shallower) block, at `output_size`. `norm` is batch normalization with
    `batch_norm` (ReviewKD's ABF; PyTorch's momentum 0.1 and epsilon 1e-5,
    default initialisation), else ReLU (one stage of UniKD's AFF, whose
    `MultiStageAggregator` keeps only the shallowest output). The
    convolutions have no bias and the reference's Kaiming-uniform `a=1`
    kernels; the gate is a `FusionGate` (PyTorch's default init).

    Args:
        output_channels: Channels of the output.
        mid_channels: Width of the fusion, `M`.
        output_size: `(height, width)` of the output and of the residual
            passed on. Defaults to the stage's size.
        fuse: Whether the block gates its stage against a deeper residual
            (every block but the deepest).
        batch_norm: Batch normalization (ABF) or ReLU (AFF) after each
            convolution.
        **kwargs: Base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        stage: The stage `(batch, H, W, C)`, or a vector `(batch, C)` (a 1x1
            map).
        residual: The deeper block's residual `(batch, H', W', M)`; `None`
            for a block that does not fuse.
        training: Whether batch normalization uses the batch's statistics.

    Example:

    >>> import numpy as np
    >>> deepest = FusionBlock(output_channels=6, mid_channels=4, fuse=False)
    >>> block = FusionBlock(output_channels=3, mid_channels=4, output_size=(8, 8))
    >>> pooled = np.random.rand(2, 16).astype("float32")
    >>> stage = np.random.rand(2, 4, 4, 5).astype("float32")
    >>> out, residual = deepest(pooled)
    >>> out, residual = block(stage, residual)
    >>> tuple(out.shape), tuple(residual.shape)
    ((2, 8, 8, 3), (2, 8, 8, 4))
    """

    def __init__(
        self,
        output_channels,
        mid_channels,
        output_size=None,
        fuse=True,
        batch_norm=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.output_channels = output_channels
        self.mid_channels = mid_channels
        self.output_size = tuple(output_size) if output_size is not None else None
        self.fuse = fuse
        self.batch_norm = batch_norm

    def _norm(self, name):
        if not self.batch_norm:
            return None
        return keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype_policy, name=name
        )

    def build(self, stage_shape, residual_shape=None):
        del residual_shape  # the gate's width is the block's own
        shape = as_map_shape(tuple(stage_shape))
        self._out_size = self.output_size or tuple(shape[1:3])
        self.projection = _kaiming_conv(self.mid_channels, 1, self.dtype_policy, "projection")
        self.projection.build(shape)
        self.projection_norm = self._norm("projection_norm")
        self.gate = FusionGate(dtype=self.dtype_policy, name="gate") if self.fuse else None
        self.output_conv = _kaiming_conv(self.output_channels, 3, self.dtype_policy, "output_conv")
        self.output_norm = self._norm("output_norm")
        mid_shape = (shape[0], *self._out_size, self.mid_channels)
        self.output_conv.build(mid_shape)
        if self.batch_norm:
            self.projection_norm.build((*shape[:3], self.mid_channels))
            self.output_norm.build((*mid_shape[:3], self.output_channels))
        if self.fuse:
            self.gate.build(self.mid_channels)
        self.built = True

    def _normalize(self, norm, training):
        if norm is None:
            return ops.relu
        return lambda x: norm(x, training=training)

    def call(self, stage, residual=None, training=None):
        if self.fuse and residual is None:
            raise ValueError(
                f"{self.name} fuses its stage with the deeper blocks' residual "
                "(fuse=True); pass residual=, or build the deepest block with fuse=False."
            )
        norm = self._normalize(self.projection_norm, training)
        fused = fuse_stage(stage, residual if self.fuse else None, self.projection, self.gate, norm)
        fused = resize_nearest(fused, self._out_size)
        output = self._normalize(self.output_norm, training)(self.output_conv(fused))
        return output, fused

    def compute_output_shape(self, stage_shape, residual_shape=None):
        shape = as_map_shape(tuple(stage_shape))
        size = self.output_size or tuple(shape[1:3])
        return (shape[0], *size, self.output_channels), (shape[0], *size, self.mid_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_channels": self.output_channels,
                "mid_channels": self.mid_channels,
                "output_size": self.output_size,
                "fuse": self.fuse,
                "batch_norm": self.batch_norm,
            }
        )
        return config
