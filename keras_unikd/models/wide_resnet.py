"""Wide ResNets (Zagoruyko & Komodakis 2016) for CIFAR, WRN-depth-width.

Architecture of RepDistiller / mdistiller `models/cifar/wrn.py`: a 3x3 conv
stem with 16 channels, three stages of pre-activation basic blocks with
widths (16, 32, 64) x width, strides (1, 2, 2), then BN-ReLU, global average
pooling and a linear classifier. Depth is 6n+4 (n blocks per stage). No
dropout (the reference's `dropRate=0`).

Distillation taps: `stem` (the stem conv output); `stage{1,2,3}` (the
residual sum ending each stage); `stage{1,2,3}_preact`, which, as in the
reference, is the BatchNorm applied to the stage output right before its
ReLU (the first BN of the next stage, or the final BN for stage 3); `pool`;
`logits`.
"""

import keras
from keras import layers

from keras_unikd.models.layers_util import batch_norm
from keras_unikd.models.layers_util import classifier_head
from keras_unikd.models.layers_util import conv2d
from keras_unikd.models.layers_util import model_input
from keras_unikd.models.layers_util import relu


def wide_basic_block(x, filters, strides, name, bn1_name=None, add_name=None):
    """Pre-activation block: BN-ReLU-conv3x3, BN-ReLU-conv3x3, + shortcut.

    When the channel count changes the shortcut is a (strided) 1x1 conv of the
    activated input; otherwise it is the raw input.
    """
    equal_in_out = x.shape[-1] == filters
    if equal_in_out and strides != 1:
        raise ValueError("A strided wide block must change the channel count.")
    act = batch_norm(x, name=bn1_name or f"{name}_bn1")
    act = relu(act, name=f"{name}_relu1")
    out = conv2d(act, filters, 3, strides=strides, name=f"{name}_conv1")
    out = batch_norm(out, name=f"{name}_bn2")
    out = relu(out, name=f"{name}_relu2")
    out = conv2d(out, filters, 3, name=f"{name}_conv2")
    if equal_in_out:
        shortcut = x
    else:
        shortcut = conv2d(act, filters, 1, strides=strides, name=f"{name}_shortcut")
    return layers.Add(name=add_name or f"{name}_add")([shortcut, out])


def wide_resnet(
    depth,
    width,
    num_classes=100,
    input_shape=(32, 32, 3),
    name=None,
):
    """WRN-`depth`-`width`; `depth` must be 6n+4."""
    if (depth - 4) % 6 != 0:
        raise ValueError(f"Wide ResNet depth must be 6n+4, got {depth}.")
    n = (depth - 4) // 6
    widths = (16 * width, 32 * width, 64 * width)
    inputs = model_input(input_shape)
    x = conv2d(inputs, 16, 3, name="stem")
    for stage, (filters, strides) in enumerate(zip(widths, (1, 2, 2)), start=1):
        for i in range(n):
            x = wide_basic_block(
                x,
                filters,
                strides if i == 0 else 1,
                name=f"s{stage}_b{i}",
                # The first BN of stage s+1 normalizes stage s's output: the
                # reference's pre-activation feature for stage s.
                bn1_name=f"stage{stage - 1}_preact" if (i == 0 and stage > 1) else None,
                add_name=f"stage{stage}" if i == n - 1 else None,
            )
    x = batch_norm(x, name="stage3_preact")
    x = relu(x, name="final_relu")
    logits = classifier_head(x, num_classes)
    return keras.Model(inputs, logits, name=name or f"wrn_{depth}_{width}")


def wrn_16_1(num_classes=100, input_shape=(32, 32, 3), name="wrn_16_1"):
    return wide_resnet(16, 1, num_classes, input_shape, name)


def wrn_16_2(num_classes=100, input_shape=(32, 32, 3), name="wrn_16_2"):
    return wide_resnet(16, 2, num_classes, input_shape, name)


def wrn_40_1(num_classes=100, input_shape=(32, 32, 3), name="wrn_40_1"):
    return wide_resnet(40, 1, num_classes, input_shape, name)


def wrn_40_2(num_classes=100, input_shape=(32, 32, 3), name="wrn_40_2"):
    return wide_resnet(40, 2, num_classes, input_shape, name)
