"""CIFAR ShuffleNetV1 (g=3) and ShuffleNetV2 (1x) of the KD benchmarks.

Architectures of RepDistiller / mdistiller `ShuffleNetv1.py` (`ShuffleV1`) and
`ShuffleNetv2.py` (`ShuffleV2`, net size 1): a 1x1 stem with 24 channels (no
stride, no max-pool), three stages each halving the resolution
(32 -> 16 -> 8 -> 4 on CIFAR), global average pooling and a linear classifier.

Distillation taps: `stem` (stem after ReLU), `stage{1,2,3}` (last block of each
stage), `stage{1,2,3}_preact` (that block's tensor before its final ReLU, as
the reference's `preact` features), `pool`, `logits`.
"""

import keras
from keras import layers

from keras_unikd.models.layers_util import ChannelShuffle
from keras_unikd.models.layers_util import ChannelSplit
from keras_unikd.models.layers_util import avg_pool
from keras_unikd.models.layers_util import batch_norm
from keras_unikd.models.layers_util import classifier_head
from keras_unikd.models.layers_util import conv_bn
from keras_unikd.models.layers_util import depthwise_conv2d
from keras_unikd.models.layers_util import model_input
from keras_unikd.models.layers_util import relu


def _stem(inputs):
    return conv_bn(inputs, 24, 1, name="conv1", act_name="stem")


def _dw_bn(x, strides, name):
    """3x3 depthwise conv + BN, no activation."""
    x = depthwise_conv2d(x, 3, strides=strides, name=f"{name}_conv")
    return batch_norm(x, name=f"{name}_bn")


# ---------------------------------------------------------------- ShuffleNetV1


def shufflev1_unit(x, filters, strides, groups, name, out_name=None, preact_name=None):
    """ShuffleNetV1 bottleneck.

    Grouped 1x1 (ungrouped when the input is the 24-channel stem) - BN - ReLU,
    channel shuffle, 3x3 depthwise (strided) - BN - ReLU, grouped 1x1 - BN.
    Stride 1 adds the identity; stride 2 concatenates a 3x3/2 average-pooled
    shortcut (so the unit's output has `filters + in_channels` channels).
    """
    in_channels = x.shape[-1]
    mid = int(filters / 4)
    first_groups = 1 if in_channels == 24 else groups
    out = conv_bn(x, mid, 1, groups=first_groups, name=f"{name}_1")
    if first_groups > 1:
        out = ChannelShuffle(first_groups, name=f"{name}_shuffle")(out)
    out = _dw_bn(out, strides, name=f"{name}_2")
    out = relu(out, name=f"{name}_2_relu")
    out = conv_bn(out, filters, 1, groups=groups, activation=False, name=f"{name}_3")
    preact_name = preact_name or f"{name}_preact"
    if strides == 2:
        shortcut = avg_pool(x, 3, 2, padding=1, name=f"{name}_shortcut_pool")
        out = layers.Concatenate(name=preact_name)([out, shortcut])
    else:
        out = layers.Add(name=preact_name)([out, x])
    return relu(out, name=out_name or f"{name}_out")


def shufflenet_v1(
    out_planes=(240, 480, 960),
    num_blocks=(4, 8, 4),
    groups=3,
    num_classes=100,
    input_shape=(32, 32, 3),
    name="shufflenetv1",
):
    inputs = model_input(input_shape)
    x = _stem(inputs)
    for stage, (planes, n) in enumerate(zip(out_planes, num_blocks), start=1):
        for i in range(n):
            last = i == n - 1
            # The strided first unit concatenates its input to its output.
            filters = planes - x.shape[-1] if i == 0 else planes
            x = shufflev1_unit(
                x,
                filters,
                2 if i == 0 else 1,
                groups,
                name=f"s{stage}_b{i}",
                out_name=f"stage{stage}" if last else None,
                preact_name=f"stage{stage}_preact" if last else None,
            )
    logits = classifier_head(x, num_classes)
    return keras.Model(inputs, logits, name=name)


def shufflenetv1(num_classes=100, input_shape=(32, 32, 3), name="shufflenetv1"):
    """The KD benchmarks' `ShuffleV1`: groups 3, widths (240, 480, 960)."""
    return shufflenet_v1(num_classes=num_classes, input_shape=input_shape, name=name)


# ---------------------------------------------------------------- ShuffleNetV2

SHUFFLENET_V2_CONFIGS = {
    0.2: ((40, 80, 160, 512), (3, 3, 3)),
    0.3: ((40, 80, 160, 512), (3, 7, 3)),
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2: ((224, 488, 976, 2048), (3, 7, 3)),
}


def shufflev2_down_unit(x, filters, name):
    """Stride-2 unit: two branches of `filters // 2` channels, concat, shuffle."""
    mid = filters // 2
    left = _dw_bn(x, 2, name=f"{name}_l1")
    left = conv_bn(left, mid, 1, name=f"{name}_l2")
    right = conv_bn(x, mid, 1, name=f"{name}_r1")
    right = _dw_bn(right, 2, name=f"{name}_r2")
    right = conv_bn(right, mid, 1, name=f"{name}_r3")
    out = layers.Concatenate(name=f"{name}_concat")([left, right])
    return ChannelShuffle(2, name=f"{name}_shuffle")(out)


def shufflev2_basic_unit(x, name, out_name=None, preact_name=None, split_ratio=0.5):
    """Stride-1 unit: split; 1x1-BN-ReLU, 3x3 dw-BN, 1x1-BN on the second half;
    concat with the untouched first half; ReLU; shuffle.

    The reference applies the final ReLU to the branch only and exposes
    `concat(first_half, branch_before_relu)` as the pre-activation. The first
    half is always a post-ReLU tensor (every unit's output is), so
    `relu(concat(first, branch))` equals `concat(first, relu(branch))`
    exactly: the concat is built first (the `preact` layer) and ReLU'd whole.
    """
    first, second = ChannelSplit(split_ratio, name=f"{name}_split")(x)
    channels = second.shape[-1]
    out = conv_bn(second, channels, 1, name=f"{name}_1")
    out = _dw_bn(out, 1, name=f"{name}_2")
    out = conv_bn(out, channels, 1, activation=False, name=f"{name}_3")
    out = layers.Concatenate(name=preact_name or f"{name}_preact")([first, out])
    out = relu(out, name=f"{name}_relu")
    return ChannelShuffle(2, name=out_name or f"{name}_shuffle")(out)


def shufflenet_v2(
    net_size=1,
    num_classes=100,
    input_shape=(32, 32, 3),
    name="shufflenetv2",
):
    out_channels, num_blocks = SHUFFLENET_V2_CONFIGS[net_size]
    inputs = model_input(input_shape)
    x = _stem(inputs)
    for stage, (filters, n) in enumerate(zip(out_channels[:3], num_blocks), start=1):
        x = shufflev2_down_unit(x, filters, name=f"s{stage}_down")
        for i in range(n):
            last = i == n - 1
            x = shufflev2_basic_unit(
                x,
                name=f"s{stage}_b{i}",
                out_name=f"stage{stage}" if last else None,
                preact_name=f"stage{stage}_preact" if last else None,
            )
    x = conv_bn(x, out_channels[3], 1, name="conv2")
    logits = classifier_head(x, num_classes)
    return keras.Model(inputs, logits, name=name)


def shufflenetv2(num_classes=100, input_shape=(32, 32, 3), name="shufflenetv2"):
    """The KD benchmarks' `ShuffleV2` (net size 1: widths 116, 232, 464, 1024)."""
    return shufflenet_v2(1, num_classes=num_classes, input_shape=input_shape, name=name)
