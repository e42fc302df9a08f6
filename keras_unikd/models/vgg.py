"""CIFAR VGG with batch normalization (RepDistiller / mdistiller `vgg*_bn`).

Five blocks of 3x3 conv (with bias) - BN - ReLU; 2x2 max-pooling after blocks
0-2 (and after block 3 only for 64x64 inputs, as in the reference), global
average pooling and a single linear classifier on 512 features. The KD
benchmarks' "vgg8" and "vgg13" are the BN variants of configurations "S" and
"B".

Distillation taps: `stem` (block 0 after ReLU, 32x32x64); `stage{1..4}`
(blocks 1-4 after their final ReLU) and `stage{1..4}_preact` (the final BN
of each block, before that ReLU); `pool`; `logits`.
"""

import keras
from keras import layers

from keras_unikd.models.layers_util import batch_norm
from keras_unikd.models.layers_util import classifier_head
from keras_unikd.models.layers_util import conv2d
from keras_unikd.models.layers_util import model_input
from keras_unikd.models.layers_util import relu

VGG_CONFIGS = {
    "S": ((64,), (128,), (256,), (512,), (512,)),
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "E": (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


def vgg_block(x, widths, index, out_name, preact_name):
    """conv-BN-ReLU repeated; the last BN is `preact_name`, its ReLU `out_name`."""
    last = len(widths) - 1
    for j, filters in enumerate(widths):
        x = conv2d(x, filters, 3, use_bias=True, name=f"b{index}_conv{j}")
        x = batch_norm(x, name=preact_name if j == last else f"b{index}_bn{j}")
        x = relu(x, name=out_name if j == last else f"b{index}_relu{j}")
    return x


def cifar_vgg(config, num_classes=100, input_shape=(32, 32, 3), name="vgg"):
    """A BN-VGG for a configuration key of `VGG_CONFIGS` (or explicit widths)."""
    cfg = VGG_CONFIGS[config] if isinstance(config, str) else config
    inputs = model_input(input_shape)
    x = vgg_block(inputs, cfg[0], 0, out_name="stem", preact_name="b0_preact")
    for b in range(1, 5):
        # The reference pools after blocks 0-2; after block 3 only at 64x64.
        if b <= 3 or input_shape[0] == 64:
            x = layers.MaxPooling2D(2, strides=2, name=f"maxpool{b - 1}")(x)
        x = vgg_block(x, cfg[b], b, out_name=f"stage{b}", preact_name=f"stage{b}_preact")
    logits = classifier_head(x, num_classes)
    return keras.Model(inputs, logits, name=name)


def vgg8(num_classes=100, input_shape=(32, 32, 3), name="vgg8"):
    return cifar_vgg("S", num_classes, input_shape, name)


def vgg11(num_classes=100, input_shape=(32, 32, 3), name="vgg11"):
    return cifar_vgg("A", num_classes, input_shape, name)


def vgg13(num_classes=100, input_shape=(32, 32, 3), name="vgg13"):
    return cifar_vgg("B", num_classes, input_shape, name)


def vgg16(num_classes=100, input_shape=(32, 32, 3), name="vgg16"):
    return cifar_vgg("D", num_classes, input_shape, name)


def vgg19(num_classes=100, input_shape=(32, 32, 3), name="vgg19"):
    return cifar_vgg("E", num_classes, input_shape, name)
