"""Shared building blocks for the CIFAR model zoo (channels_last, Keras 3).

The zoo reproduces the PyTorch CIFAR distillation models (the RepDistiller /
mdistiller conventions) layer for layer, so the helpers here mirror PyTorch
semantics where Keras differs by default:

* Batch normalization uses PyTorch's running-average update (`momentum=0.1`
  in PyTorch, i.e. `momentum=0.9` in Keras) and `epsilon=1e-5`.
* A strided `k x k` convolution with PyTorch's `padding=k // 2` pads both
  sides; Keras' `"same"` pads only the bottom/right for an even input, which
  shifts the sampling grid. Strided convolutions and poolings therefore use an
  explicit `ZeroPadding2D` followed by a `"valid"` layer.
* Weights start from He-normal with `fan_out` scaling (the reference's
  `kaiming_normal_(mode="fan_out")`), and the classifier from PyTorch's
  default `nn.Linear` uniform initialisation.
"""

import keras
from keras import layers
from keras import ops

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv_initializer():
    """He-normal with `fan_out` scaling, as `kaiming_normal_(mode="fan_out")`."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def dense_initializer():
    """PyTorch's default `nn.Linear` weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


def _pad_for(x, kernel_size, strides, padding, name):
    """Returns `(x, keras_padding)` reproducing PyTorch's symmetric padding."""
    if padding is None:
        padding = kernel_size // 2
    if padding == 0:
        return x, "valid"
    if strides == 1 and kernel_size % 2 == 1 and padding == kernel_size // 2:
        return x, "same"
    x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return x, "valid"


def conv2d(
    x,
    filters,
    kernel_size=3,
    strides=1,
    groups=1,
    use_bias=False,
    padding=None,
    name=None,
):
    """A `Conv2D` with PyTorch padding semantics (`padding` defaults to k // 2)."""
    x, keras_padding = _pad_for(x, kernel_size, strides, padding, name)
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=keras_padding,
        groups=groups,
        use_bias=use_bias,
        kernel_initializer=conv_initializer(),
        name=name,
    )(x)


def depthwise_conv2d(x, kernel_size=3, strides=1, use_bias=False, name=None):
    """A depthwise convolution (PyTorch `groups == in_channels == out_channels`)."""
    x, keras_padding = _pad_for(x, kernel_size, strides, None, name)
    return layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding=keras_padding,
        use_bias=use_bias,
        depthwise_initializer=conv_initializer(),
        name=name,
    )(x)


def batch_norm(x, name=None):
    """`BatchNormalization` with PyTorch's defaults."""
    return layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )(x)


def relu(x, name=None):
    return layers.Activation("relu", name=name)(x)


def conv_bn(
    x,
    filters,
    kernel_size=3,
    strides=1,
    groups=1,
    activation=True,
    use_bias=False,
    name=None,
    act_name=None,
):
    """conv -> BN (-> ReLU). Layers are named `{name}_conv`, `{name}_bn`, and
    `act_name` (default `{name}_relu`)."""
    x = conv2d(
        x,
        filters,
        kernel_size,
        strides=strides,
        groups=groups,
        use_bias=use_bias,
        name=f"{name}_conv",
    )
    x = batch_norm(x, name=f"{name}_bn")
    if activation:
        x = relu(x, name=act_name or f"{name}_relu")
    return x


def avg_pool(x, pool_size, strides, padding=0, name=None):
    """`nn.AvgPool2d(pool_size, strides, padding)` with `count_include_pad=True`."""
    if padding:
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return layers.AveragePooling2D(pool_size, strides=strides, padding="valid", name=name)(x)


def classifier_head(x, num_classes, pool_name="pool", logits_name="logits"):
    """Global average pooling (`pool`) then a linear classifier (`logits`)."""
    pooled = layers.GlobalAveragePooling2D(name=pool_name)(x)
    return layers.Dense(
        num_classes,
        kernel_initializer=dense_initializer(),
        bias_initializer="zeros",
        name=logits_name,
    )(pooled)


def model_input(input_shape, name="input"):
    return keras.Input(shape=tuple(input_shape), name=name)


@keras.saving.register_keras_serializable(package="keras_unikd")
class ChannelShuffle(layers.Layer):
    """ShuffleNet channel shuffle for channels-last maps.

    Channel `i * (C // g) + j` moves to `j * g + i`, exactly as the PyTorch
    `[N, g, C/g, H, W] -> [N, C/g, g, H, W]` permutation.
    """

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, x):
        if self.groups == 1:
            return x
        height, width, channels = x.shape[1], x.shape[2], x.shape[3]
        g = self.groups
        x = ops.reshape(x, (-1, height, width, g, channels // g))
        x = ops.transpose(x, (0, 1, 2, 4, 3))
        return ops.reshape(x, (-1, height, width, channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["groups"] = self.groups
        return config


@keras.saving.register_keras_serializable(package="keras_unikd")
class ChannelSplit(layers.Layer):
    """Splits channels-last maps at `int(C * ratio)`; returns `[first, second]`."""

    def __init__(self, ratio=0.5, **kwargs):
        super().__init__(**kwargs)
        self.ratio = float(ratio)

    def _split_point(self, channels):
        return int(channels * self.ratio)

    def call(self, x):
        c = self._split_point(x.shape[-1])
        return [x[..., :c], x[..., c:]]

    def compute_output_shape(self, input_shape):
        c = self._split_point(input_shape[-1])
        head = tuple(input_shape[:-1])
        return [head + (c,), head + (input_shape[-1] - c,)]

    def get_config(self):
        config = super().get_config()
        config["ratio"] = self.ratio
        return config
