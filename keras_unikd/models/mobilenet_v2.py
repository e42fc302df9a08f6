"""CIFAR MobileNetV2 of the KD benchmarks (RepDistiller / mdistiller
`mobilenetv2_T_w`; "MobileNetV2" there is `mobile_half`: expansion 6, width 0.5).

Differences from the ImageNet MobileNetV2 that the reference keeps: every
inverted-residual block has its 1x1 expansion conv (also at expansion 1), the
stem is a stride-2 3x3 conv, and the last 1x1 conv has 1280 channels for any
width <= 1. On 32x32 inputs the seven block groups run at
16, 16, 8, 4, 4, 2, 2 pixels.

Distillation taps follow the reference's feature list: `stem` (conv1 output,
16x16); `stage1`..`stage4` are the outputs of block groups 1, 2, 4 and 6
(0-based). Those outputs are linear (no ReLU), so `stage{k}_preact` is the
same tensor: the layer producing the group output (the residual `Add`, or
the projection BN) is named `stage{k}_preact`, followed by an identity layer
named `stage{k}`. Then `pool`, `logits`.
"""

import keras
from keras import layers

from keras_unikd.models.layers_util import batch_norm
from keras_unikd.models.layers_util import classifier_head
from keras_unikd.models.layers_util import conv2d
from keras_unikd.models.layers_util import conv_bn
from keras_unikd.models.layers_util import depthwise_conv2d
from keras_unikd.models.layers_util import model_input
from keras_unikd.models.layers_util import relu

# (expansion t, channels c, repeats n, first stride s); t=None uses the model's T.
_SETTINGS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Block groups whose outputs are the reference's feature maps f1..f4.
_STAGE_GROUPS = {1: 1, 2: 2, 4: 3, 6: 4}


def inverted_residual(x, filters, strides, expansion, name, out_name=None):
    """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 project-BN (+ identity)."""
    in_channels = x.shape[-1]
    out = conv_bn(x, in_channels * expansion, 1, name=f"{name}_expand")
    out = depthwise_conv2d(out, 3, strides=strides, name=f"{name}_dw_conv")
    out = batch_norm(out, name=f"{name}_dw_bn")
    out = relu(out, name=f"{name}_dw_relu")
    out = conv2d(out, filters, 1, name=f"{name}_project_conv")
    if strides == 1 and in_channels == filters:
        out = batch_norm(out, name=f"{name}_project_bn")
        return layers.Add(name=out_name or f"{name}_add")([x, out])
    return batch_norm(out, name=out_name or f"{name}_project_bn")


def cifar_mobilenet_v2(
    expansion=6,
    width_mult=0.5,
    num_classes=100,
    input_shape=(32, 32, 3),
    name="mobilenetv2",
):
    """`mobilenetv2_T_w(T=expansion, W=width_mult)` of the reference."""
    inputs = model_input(input_shape)
    channels = int(32 * width_mult)
    x = conv_bn(inputs, channels, 3, strides=2, name="conv1", act_name="stem")
    for g, (t, c, n, s) in enumerate(_SETTINGS):
        filters = int(c * width_mult)
        stage = _STAGE_GROUPS.get(g)
        for i in range(n):
            last = i == n - 1
            x = inverted_residual(
                x,
                filters,
                s if i == 0 else 1,
                expansion if t is None else t,
                name=f"g{g}_b{i}",
                out_name=f"stage{stage}_preact" if (stage and last) else None,
            )
        if stage:
            x = layers.Identity(name=f"stage{stage}")(x)
    last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
    x = conv_bn(x, last_channels, 1, name="conv2")
    logits = classifier_head(x, num_classes)
    return keras.Model(inputs, logits, name=name)


def mobilenetv2(num_classes=100, input_shape=(32, 32, 3), name="mobilenetv2"):
    """The KD benchmarks' MobileNetV2 (`mobile_half`: T=6, width 0.5)."""
    return cifar_mobilenet_v2(6, 0.5, num_classes, input_shape, name)


mobile_half = mobilenetv2
