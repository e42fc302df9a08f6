"""Small teacher / student CNNs for the Fashion-MNIST demo and benchmark.

Both builders return functional `keras.Model`s whose stage outputs are
named layers, so distillation taps can refer to them by name:

- `stage1`, `stage2`, `stage3`: post-activation output of each stage;
- `stage1_preact`, `stage2_preact`, `stage3_preact`: the BatchNorm output
  just before the last ReLU of each stage (UniKD taps the teacher's
  pre-activation stage-1 feature);
- `pool`: the global-average-pooled feature vector;
- `logits`: the class logits (no softmax).

Downsampling between stages is a 2x2 max pool with `"same"` padding, so a
spatial size `s` becomes `ceil(s / 2)`: 28 -> 14 -> 7, 8 -> 4 -> 2, and even
1x1 inputs work.
"""


import keras
from keras import layers

from keras_unikd.validation import check_positive_int

_BN_MOMENTUM = 0.9  # Faster-settling statistics for short demo trainings.


def _check_args(fn, input_shape, num_classes, **positive_ints):
    if len(tuple(input_shape)) != 3:
        raise ValueError(
            f"{fn}: `input_shape` must be (height, width, channels) "
            f"(channels last); got {input_shape!r}."
        )
    positive_ints["num_classes"] = num_classes
    for name, value in positive_ints.items():
        check_positive_int(name, value, fn=fn)


def _conv(x, filters, prefix, index):
    x = layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{prefix}_conv{index}",
    )(x)
    return x


def _stage(x, filters, num_blocks, name):
    """`num_blocks` conv-BN-ReLU blocks; the last BN / ReLU get stage names."""
    for i in range(1, num_blocks + 1):
        last = i == num_blocks
        x = _conv(x, filters, name, i)
        x = layers.BatchNormalization(
            momentum=_BN_MOMENTUM,
            name=f"{name}_preact" if last else f"{name}_bn{i}",
        )(x)
        x = layers.ReLU(name=name if last else f"{name}_relu{i}")(x)
    return x


def _downsample(x, name):
    return layers.MaxPooling2D(2, strides=2, padding="same", name=name)(x)


def _head(x, num_classes):
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return layers.Dense(num_classes, name="logits")(x)


def fashion_teacher(input_shape=(28, 28, 1), num_classes=10, name="teacher"):
    """Builds the ~290k-parameter teacher CNN (channels last).

    Architecture: a 3x3 stem conv (32 channels) + BN + ReLU, then three
    stages of 3x3 conv-BN-ReLU blocks (one block of 32 channels, two of 64,
    two of 128; one block at full resolution keeps training affordable on
    a CPU), separated by 2x2 max pooling, then global average pooling and a dense
    logits layer. For a 28x28 input the stage outputs are 28x28x32,
    14x14x64 and 7x7x128.

    Args:
        input_shape: `(height, width, channels)` of the input images.
        num_classes: Number of output logits.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits, with layers
        named `stage1`, `stage1_preact`, `stage2`, `stage3`, `pool` and
        `logits` (see the module docstring).

    Raises:
        ValueError: If `input_shape` is not 3-D or `num_classes` is not a
            positive integer.

    Example:

    >>> model = fashion_teacher()
    >>> tuple(model.get_layer("stage3").output.shape)
    (None, 7, 7, 128)
    """
    _check_args("fashion_teacher", input_shape, num_classes)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = _conv(inputs, 32, "stem", 1)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name="stem_bn1")(x)
    x = layers.ReLU(name="stem_relu1")(x)
    x = _stage(x, 32, 1, "stage1")
    x = _downsample(x, "stage2_down")
    x = _stage(x, 64, 2, "stage2")
    x = _downsample(x, "stage3_down")
    x = _stage(x, 128, 2, "stage3")
    outputs = _head(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def fashion_student(
    input_shape=(28, 28, 1), num_classes=10, width=8, name="student"
):
    """Builds the small student CNN (a few thousand parameters, channels last).

    Architecture: three stages of one 3x3 conv-BN-ReLU block with `width`,
    `2 * width` and `4 * width` channels, separated by 2x2 max pooling, then
    global average pooling and a dense logits layer. With the default
    `width=8` it has about 6.4k parameters; for a 28x28 input the stage
    outputs are 28x28x8, 14x14x16 and 7x7x32.

    Args:
        input_shape: `(height, width, channels)` of the input images.
        num_classes: Number of output logits.
        width: Channels of the first stage (doubled at each later stage).
        name: Model name.

    Returns:
        A functional `keras.Model` mapping images to logits, with layers
        named `stage1`, `stage1_preact`, `stage2`, `stage3`, `pool` and
        `logits` (see the module docstring).

    Raises:
        ValueError: If `input_shape` is not 3-D or `num_classes` / `width`
            is not a positive integer.

    Example:

    >>> model = fashion_student(width=8)
    >>> tuple(model.get_layer("stage2").output.shape)
    (None, 14, 14, 16)
    """
    _check_args("fashion_student", input_shape, num_classes, width=width)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = _stage(inputs, width, 1, "stage1")
    x = _downsample(x, "stage2_down")
    x = _stage(x, 2 * width, 1, "stage2")
    x = _downsample(x, "stage3_down")
    x = _stage(x, 4 * width, 1, "stage3")
    outputs = _head(x, num_classes)
    return keras.Model(inputs, outputs, name=name)
