"""CIFAR ResNets (He et al. 2016, the 6n+2 family) as used in KD benchmarks.

Architecture of RepDistiller / mdistiller `models/cifar/resnet.py`: a 3x3
stem, three stages of post-activation residual blocks at 32x32, 16x16 and
8x8, global average pooling and a linear classifier. The `x4` variants
widen the stem/stages to (32, 64, 128, 256).

Distillation taps (layer names): `stem`; `stage{1,2,3}` (block output after
ReLU) and `stage{1,2,3}_preact` (the residual sum before that ReLU);
`pool`; `logits`.
"""

import keras
from keras import layers

from keras_unikd.models.layers_util import batch_norm
from keras_unikd.models.layers_util import classifier_head
from keras_unikd.models.layers_util import conv2d
from keras_unikd.models.layers_util import conv_bn
from keras_unikd.models.layers_util import model_input
from keras_unikd.models.layers_util import relu

_THIN = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def basic_block(x, filters, strides, name, out_name=None, preact_name=None):
    """Post-activation basic block: conv-BN-ReLU, conv-BN, + shortcut, ReLU.

    The shortcut is a 1x1 conv + BN when the shape changes. Returns the block
    output; the sum before the final ReLU is the layer named `preact_name`.
    """
    in_channels = x.shape[-1]
    out = conv_bn(x, filters, 3, strides=strides, name=f"{name}_1")
    out = conv_bn(out, filters, 3, activation=False, name=f"{name}_2")
    shortcut = x
    if strides != 1 or in_channels != filters:
        shortcut = conv_bn(
            x, filters, 1, strides=strides, activation=False, name=f"{name}_down"
        )
    out = layers.Add(name=preact_name or f"{name}_add")([out, shortcut])
    return relu(out, name=out_name or f"{name}_out")


def bottleneck_block(x, planes, strides, name, out_name=None, preact_name=None, expansion=4):
    """Post-activation bottleneck: 1x1, 3x3 (strided), 1x1 x`expansion`, + shortcut."""
    in_channels = x.shape[-1]
    filters = planes * expansion
    out = conv_bn(x, planes, 1, name=f"{name}_1")
    out = conv_bn(out, planes, 3, strides=strides, name=f"{name}_2")
    out = conv_bn(out, filters, 1, activation=False, name=f"{name}_3")
    shortcut = x
    if strides != 1 or in_channels != filters:
        shortcut = conv_bn(
            x, filters, 1, strides=strides, activation=False, name=f"{name}_down"
        )
    out = layers.Add(name=preact_name or f"{name}_add")([out, shortcut])
    return relu(out, name=out_name or f"{name}_out")


def residual_stage(x, block_fn, width, num_blocks, strides, stage):
    """`num_blocks` blocks; the first is strided. The last block's output and
    pre-activation sum are named `stage{stage}` and `stage{stage}_preact`."""
    for i in range(num_blocks):
        last = i == num_blocks - 1
        x = block_fn(
            x,
            width,
            strides if i == 0 else 1,
            name=f"s{stage}_b{i}",
            out_name=f"stage{stage}" if last else None,
            preact_name=f"stage{stage}_preact" if last else None,
        )
    return x


def cifar_resnet(
    depth,
    widths=_THIN,
    num_classes=100,
    input_shape=(32, 32, 3),
    name=None,
):
    """A 6n+2 basic-block CIFAR ResNet. `widths = (stem, stage1, stage2, stage3)`."""
    if (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}.")
    n = (depth - 2) // 6
    inputs = model_input(input_shape)
    x = conv2d(inputs, widths[0], 3, name="stem_conv")
    x = batch_norm(x, name="stem_bn")
    x = relu(x, name="stem")
    for stage, (width, strides) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
        x = residual_stage(x, basic_block, width, n, strides, stage)
    logits = classifier_head(x, num_classes)
    return keras.Model(inputs, logits, name=name or f"resnet{depth}")


def resnet8(num_classes=100, input_shape=(32, 32, 3), name="resnet8"):
    return cifar_resnet(8, _THIN, num_classes, input_shape, name)


def resnet14(num_classes=100, input_shape=(32, 32, 3), name="resnet14"):
    return cifar_resnet(14, _THIN, num_classes, input_shape, name)


def resnet20(num_classes=100, input_shape=(32, 32, 3), name="resnet20"):
    return cifar_resnet(20, _THIN, num_classes, input_shape, name)


def resnet32(num_classes=100, input_shape=(32, 32, 3), name="resnet32"):
    return cifar_resnet(32, _THIN, num_classes, input_shape, name)


def resnet44(num_classes=100, input_shape=(32, 32, 3), name="resnet44"):
    return cifar_resnet(44, _THIN, num_classes, input_shape, name)


def resnet56(num_classes=100, input_shape=(32, 32, 3), name="resnet56"):
    return cifar_resnet(56, _THIN, num_classes, input_shape, name)


def resnet110(num_classes=100, input_shape=(32, 32, 3), name="resnet110"):
    return cifar_resnet(110, _THIN, num_classes, input_shape, name)


def resnet8x4(num_classes=100, input_shape=(32, 32, 3), name="resnet8x4"):
    return cifar_resnet(8, _WIDE, num_classes, input_shape, name)


def resnet32x4(num_classes=100, input_shape=(32, 32, 3), name="resnet32x4"):
    return cifar_resnet(32, _WIDE, num_classes, input_shape, name)
