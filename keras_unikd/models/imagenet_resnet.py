"""ImageNet ResNet18 / ResNet34 (He et al. 2016) with named distillation taps.

The ImageNet distillation benchmark (ResNet34 -> ResNet18) uses the standard
ImageNet ResNets: a 7x7 stride-2 stem with 64 channels, batch norm, ReLU and
a 3x3 stride-2 max-pool, then four stages of post-activation basic blocks at
widths 64, 128, 256, 512 (strides 1, 2, 2, 2), global average pooling and a
linear classifier. On 224x224 inputs the stages run at 56, 28, 14 and 7
pixels. With 1000 classes the trainable parameter counts equal the
published ones: ResNet18 11,689,512 (11.69M), ResNet34 21,797,672 (21.80M).

The blocks are the zoo's (`cifar_resnet.basic_block`), so the conventions
are the CIFAR zoo's: PyTorch padding semantics for strided layers, PyTorch
batch-norm momentum and epsilon, He-normal (`fan_out`) convolutions.

Distillation taps (layer names): `stem` (the stem's ReLU, before the
max-pool); `stage{1..4}` (the last block's output after ReLU) and
`stage{1..4}_preact` (its residual sum before that ReLU); `pool`; `logits`.
"""

import keras
from keras import layers

from keras_unikd.models.cifar_resnet import basic_block
from keras_unikd.models.cifar_resnet import residual_stage
from keras_unikd.models.layers_util import batch_norm
from keras_unikd.models.layers_util import classifier_head
from keras_unikd.models.layers_util import conv2d
from keras_unikd.models.layers_util import model_input
from keras_unikd.models.layers_util import relu

_STAGE_WIDTHS = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)

# Trainable parameters with num_classes=1000 (torchvision's `sum(p.numel())`).
IMAGENET_EXACT_PARAMS = {
    "imagenet_resnet18": 11_689_512,
    "imagenet_resnet34": 21_797_672,
}


def imagenet_resnet(
    num_blocks,
    num_classes=1000,
    input_shape=(224, 224, 3),
    name="resnet",
):
    """Builds a basic-block ImageNet ResNet.

    Args:
        num_blocks: Blocks per stage, four entries (`(2, 2, 2, 2)` is
            ResNet18, `(3, 4, 6, 3)` ResNet34).
        num_classes: Number of logits.
        input_shape: Channels-last input shape; any size divisible by 32
            keeps the usual stage resolutions (224 gives 56/28/14/7).
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits, with the layers
        `stem`, `stage1..4`, `stage1_preact..stage4_preact`, `pool`, `logits`.

    Raises:
        ValueError: if `num_blocks` does not have four entries.

    Example:

    ```python
    model = imagenet_resnet((2, 2, 2, 2), num_classes=10, input_shape=(64, 64, 3))
    model.get_layer("stage1").output.shape  # (None, 16, 16, 64)
    ```
    """
    if len(num_blocks) != 4:
        raise ValueError(
            f"An ImageNet ResNet has four stages; got num_blocks={num_blocks!r}."
        )
    inputs = model_input(input_shape)
    x = conv2d(inputs, 64, 7, strides=2, name="stem_conv")
    x = batch_norm(x, name="stem_bn")
    x = relu(x, name="stem")
    # PyTorch's MaxPool2d(3, 2, padding=1): the padding never wins the max
    # because it follows a ReLU (inputs >= 0), so zero padding is exact.
    x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
    for stage, (width, n, strides) in enumerate(
        zip(_STAGE_WIDTHS, num_blocks, _STAGE_STRIDES), start=1
    ):
        x = residual_stage(x, basic_block, width, n, strides, stage)
    logits = classifier_head(x, num_classes)
    return keras.Model(inputs, logits, name=name)


def imagenet_resnet18(num_classes=1000, input_shape=(224, 224, 3), name="resnet18"):
    """ImageNet ResNet18 (11.69M parameters with 1000 classes).

    Args:
        num_classes: Number of logits.
        input_shape: Channels-last input shape.
        name: Model name.

    Returns:
        A functional `keras.Model`; see `imagenet_resnet`.
    """
    return imagenet_resnet((2, 2, 2, 2), num_classes, input_shape, name)


def imagenet_resnet34(num_classes=1000, input_shape=(224, 224, 3), name="resnet34"):
    """ImageNet ResNet34 (21.80M parameters with 1000 classes).

    Args:
        num_classes: Number of logits.
        input_shape: Channels-last input shape.
        name: Model name.

    Returns:
        A functional `keras.Model`; see `imagenet_resnet`.
    """
    return imagenet_resnet((3, 4, 6, 3), num_classes, input_shape, name)
