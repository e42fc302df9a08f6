"""ImageNet-style ResNets adapted to CIFAR (mdistiller `models/cifar/resnetv2.py`).

A 3x3 stride-1 stem with 64 channels (no max-pool), four stages at widths
(64, 128, 256, 512) x expansion and strides (1, 2, 2, 2): on 32x32 inputs the
stages are 32x32, 16x16, 8x8 and 4x4. ResNet50 ([3, 4, 6, 3] bottlenecks) is
the usual CIFAR-100 teacher for MobileNetV2.

Distillation taps: `stem`, `stage{1..4}`, `stage{1..4}_preact`, `pool`, `logits`.
"""

import keras

from keras_unikd.models.cifar_resnet import basic_block
from keras_unikd.models.cifar_resnet import bottleneck_block
from keras_unikd.models.cifar_resnet import residual_stage
from keras_unikd.models.layers_util import batch_norm
from keras_unikd.models.layers_util import classifier_head
from keras_unikd.models.layers_util import conv2d
from keras_unikd.models.layers_util import model_input
from keras_unikd.models.layers_util import relu

_STAGE_WIDTHS = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)


def cifar_resnet_v2(
    block,
    num_blocks,
    num_classes=100,
    input_shape=(32, 32, 3),
    name="resnet",
):
    """`block` is `"basic"` or `"bottleneck"`; `num_blocks` has one entry per stage."""
    if block == "basic":
        block_fn = basic_block
    elif block == "bottleneck":
        block_fn = bottleneck_block
    else:
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}.")
    inputs = model_input(input_shape)
    x = conv2d(inputs, 64, 3, name="stem_conv")
    x = batch_norm(x, name="stem_bn")
    x = relu(x, name="stem")
    for stage, (width, n, strides) in enumerate(
        zip(_STAGE_WIDTHS, num_blocks, _STAGE_STRIDES), start=1
    ):
        x = residual_stage(x, block_fn, width, n, strides, stage)
    logits = classifier_head(x, num_classes)
    return keras.Model(inputs, logits, name=name)


def resnet18(num_classes=100, input_shape=(32, 32, 3), name="resnet18"):
    return cifar_resnet_v2("basic", (2, 2, 2, 2), num_classes, input_shape, name)


def resnet34(num_classes=100, input_shape=(32, 32, 3), name="resnet34"):
    return cifar_resnet_v2("basic", (3, 4, 6, 3), num_classes, input_shape, name)


def resnet50(num_classes=100, input_shape=(32, 32, 3), name="resnet50"):
    return cifar_resnet_v2("bottleneck", (3, 4, 6, 3), num_classes, input_shape, name)
