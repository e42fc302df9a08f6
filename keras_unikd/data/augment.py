"""Shared `tf.data` building blocks for the TFDS image pipelines.

Per-example augmentations (random flip, padded random crop, random-resized
crop), the strong view of weak/strong-view distillation (`rand_augment`,
`cutout`, both in `strong_augment`), evaluation resizing (shorter-side
resize, center crop), per-channel normalisation, per-example random seeds
and a `tfds.load` wrapper that turns "dataset not prepared" failures into
actionable errors. They are used by `cifar100_datasets`,
`imagenet_datasets` and `make_image_pipeline`.

All image functions take and return TensorFlow tensors and run inside
`tf.data` pipelines, whatever the Keras backend. Randomness is stateless:
every random function takes a `seed`, an integer tensor shaped `(2,)`
(see `with_example_seeds`, `split_seed` and `fold_seed`), so a seeded
pipeline gives the same images under parallel maps.
"""

import os

from keras_unikd.validation import check_per_channel
from keras_unikd.validation import check_positive_int


def normalize(images, mean, std):
    """Scales pixels to [0, 1] and normalises each channel.

    Computes `(images / 255 - mean) / std` in `float32`. Works on a single
    image `(H, W, C)` or a batch `(N, H, W, C)`.

    Args:
        images: Tensor with pixel values in [0, 255] (any real dtype) and
            channels last.
        mean: Per-channel mean of images in [0, 1], a length-C sequence.
        std: Per-channel standard deviation matching `mean`.

    Returns:
        A `float32` tensor of the same shape as `images`.
    """
    import numpy as np
    import tensorflow as tf

    mean = np.asarray(mean, dtype="float64")
    std = np.asarray(std, dtype="float64")
    scale = tf.constant((1.0 / (255.0 * std)).astype("float32"))
    shift = tf.constant((-mean / std).astype("float32"))
    return tf.cast(images, tf.float32) * scale + shift


def with_example_seeds(ds, seed=None):
    """Pairs every element of `ds` with its own stateless random seed.

    The seeds change every epoch; with a fixed `seed` the sequence of seeds
    (and so the augmentation) is reproducible.

    Args:
        ds: A `tf.data.Dataset`.
        seed: Optional Python integer seed.

    Returns:
        A `tf.data.Dataset` of `(element, example_seed)` pairs, where
        `example_seed` is an `int64` tensor shaped `(2,)`.
    """
    import tensorflow as tf

    seeds = tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True
    ).batch(2, drop_remainder=True)
    return tf.data.Dataset.zip((ds, seeds))


def split_seed(seed, num):
    """Derives `num` independent stateless seeds from one seed.

    Args:
        seed: Integer tensor shaped `(2,)`.
        num: Number of seeds to derive.

    Returns:
        A list of `num` `int64` tensors shaped `(2,)`.
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), num=num
    )
    return [seeds[i] for i in range(num)]


def random_flip(image, seed):
    """Flips an image left-right with probability 1/2.

    Args:
        image: Tensor shaped `(H, W, C)`.
        seed: Integer tensor shaped `(2,)`.

    Returns:
        The image, flipped or not, same shape and dtype.
    """
    import tensorflow as tf

    return tf.image.stateless_random_flip_left_right(image, seed)


def pad_and_random_crop(image, padding, seed):
    """Zero-pads an image on every side and crops it back at random.

    This is the standard CIFAR augmentation ("random crop 32 with 4-pixel
    padding"): the output has the input's size and is the input shifted by
    up to `padding` pixels along each axis, the uncovered border filled
    with zeros.

    Args:
        image: Tensor shaped `(H, W, C)`.
        padding: Non-negative Python integer, the padding on each side.
        seed: Integer tensor shaped `(2,)`.

    Returns:
        A tensor shaped like `image`, same dtype.
    """
    import tensorflow as tf

    if padding == 0:
        return image
    shape = tf.shape(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, size=shape, seed=seed)
    return tf.ensure_shape(cropped, image.shape)


def random_resized_crop(
    image,
    size,
    seed,
    scale=(0.08, 1.0),
    ratio=(3.0 / 4.0, 4.0 / 3.0),
    max_attempts=10,
):
    """Crops a random region of an image and resizes it to `size x size`.

    The region covers a fraction of the image area drawn from `scale` and
    has an aspect ratio (width / height) drawn from `ratio`; it is sampled
    with `tf.image.stateless_sample_distorted_bounding_box` on the decoded
    image. When no valid region is found in `max_attempts` tries (very
    elongated images), the whole image is used. The region is resized with
    antialiased bilinear interpolation.

    Args:
        image: Tensor shaped `(H, W, C)`, pixel values in [0, 255].
        size: Output height and width (Python integer).
        seed: Integer tensor shaped `(2,)`.
        scale: `(min, max)` fraction of the image area to crop.
        ratio: `(min, max)` aspect ratio (width / height) of the crop.
        max_attempts: Number of sampling attempts.

    Returns:
        A `float32` tensor shaped `(size, size, C)` with values in [0, 255].
    """
    import tensorflow as tf

    whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=whole_image,
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=list(ratio),
        area_range=list(scale),
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    resized = tf.image.resize(
        crop, [size, size], method="bilinear", antialias=True
    )
    return tf.ensure_shape(resized, [size, size, image.shape[-1]])


def resize_shorter_side(image, size):
    """Resizes an image so that its shorter side is `size`, keeping aspect.

    The longer side becomes `floor(size * longer / shorter)`. Uses
    antialiased bilinear interpolation.

    Args:
        image: Tensor shaped `(H, W, C)`, pixel values in [0, 255].
        size: Target length of the shorter side (Python integer).

    Returns:
        A `float32` tensor shaped `(new_H, new_W, C)`.
    """
    import tensorflow as tf

    shape = tf.shape(image)
    height = tf.cast(shape[0], tf.float64)
    width = tf.cast(shape[1], tf.float64)
    shorter = tf.minimum(height, width)
    new_height = tf.cast(tf.floor(size * height / shorter), tf.int32)
    new_width = tf.cast(tf.floor(size * width / shorter), tf.int32)
    # Guard against float round-off on the shorter side.
    new_height = tf.where(height <= width, size, new_height)
    new_width = tf.where(width < height, size, new_width)
    return tf.image.resize(
        image,
        tf.stack([new_height, new_width]),
        method="bilinear",
        antialias=True,
    )


def center_crop(image, size):
    """Crops the central `size x size` region of an image.

    The crop starts at `((H - size) // 2, (W - size) // 2)`.

    Args:
        image: Tensor shaped `(H, W, C)` with `H, W >= size`.
        size: Crop height and width (Python integer).

    Returns:
        A tensor shaped `(size, size, C)`, same dtype as `image`.

    Raises:
        tf.errors.InvalidArgumentError: (when run) if the image is smaller
            than `size`.
    """
    import tensorflow as tf

    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    crop = tf.image.crop_to_bounding_box(image, top, left, size, size)
    return tf.ensure_shape(crop, [size, size, image.shape[-1]])


def default_tfds_data_dir(data_dir=None):
    """The directory `tfds.load(data_dir=data_dir)` reads from.

    Args:
        data_dir: The `data_dir` passed to `tfds.load`, or None.

    Returns:
        `data_dir` if given, else `$TFDS_DATA_DIR`, else
        `~/tensorflow_datasets`.
    """
    if data_dir:
        return os.fspath(data_dir)
    return os.environ.get(
        "TFDS_DATA_DIR",
        os.path.join(os.path.expanduser("~"), "tensorflow_datasets"),
    )


class DatasetUnavailableError(RuntimeError):
    """A TFDS dataset is not prepared and cannot be downloaded; the message says how
    to prepare it."""


def _online(host="storage.googleapis.com", port=443, timeout=3.0):
    """Whether this machine reaches TFDS's download host (a TCP connect, no data)."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _unavailable_errors():
    import tensorflow_datasets as tfds

    errors = [
        AssertionError,
        OSError,
        tfds.core.registered.DatasetNotFoundError,
    ]
    download = getattr(tfds, "download", None)
    for name in ("DownloadError", "NonMatchingChecksumError"):
        error = getattr(download, name, None)
        if isinstance(error, type) and issubclass(error, BaseException):
            errors.append(error)
    return tuple(errors)


def load_tfds_split(name, split, *, data_dir, fn, hint, **load_kwargs):
    """Calls `tfds.load(name, split=split, as_supervised=True, ...)`.

    Failures meaning that the dataset is not prepared (no data in
    `data_dir`, download or manual-download problems, unknown dataset name)
    are re-raised as a `DatasetUnavailableError` (a `RuntimeError`) whose
    message says how to prepare the data (`hint`) and quotes the original
    TFDS error. A dataset that is not prepared, on a machine that cannot
    reach the download host, fails at once (TFDS would retry its download
    for minutes).

    Args:
        name: TFDS dataset name, e.g. `"cifar100"`.
        split: Split name.
        data_dir: TFDS data directory, or None for the default.
        fn: Name of the public function, used in the message.
        hint: Dataset-specific preparation instructions.
        **load_kwargs: Forwarded to `tfds.load`.

    Returns:
        A `tf.data.Dataset` of `(image, label)` pairs.

    Raises:
        DatasetUnavailableError: If the dataset is not available.
    """
    import tensorflow_datasets as tfds

    where = default_tfds_data_dir(data_dir)

    def load(**kwargs):
        return tfds.load(name, split=split, as_supervised=True, data_dir=data_dir, **kwargs)

    def unavailable(err, why):
        return DatasetUnavailableError(
            f"{fn}: could not load the TFDS dataset '{name}' (split '{split}') from "
            f"data_dir={where!r}{why}.\n{hint}\nOriginal error ({type(err).__name__}): {err}"
        )

    # What is prepared loads without a download; TFDS would otherwise retry a
    # download for minutes on a machine that cannot reach its host.
    try:
        return load(**dict(load_kwargs, download=False))
    except _unavailable_errors() as err:
        if not load_kwargs.get("download", True):
            raise unavailable(err, "") from err
        if not _online():
            raise unavailable(err, ", and this machine cannot reach the download host") from err
    try:
        return load(**load_kwargs)
    except _unavailable_errors() as err:
        raise unavailable(err, "") from err


def fast_options(deterministic):
    """`tf.data.Options` for the training/evaluation input pipelines.

    Args:
        deterministic: Whether elements must come out in a reproducible
            order. False lets parallel maps return elements as soon as they
            are ready, which keeps all CPU cores busy.

    Returns:
        A `tf.data.Options`.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    # One thread per op inside the pipeline; parallelism comes from the
    # parallel maps instead (the usual setting for input pipelines).
    options.threading.max_intra_op_parallelism = 1
    return options


def fold_seed(seed, value):
    """Derives a new stateless seed from `seed` and an integer `value`.

    Different `value`s give independent seeds; the same `seed` and `value`
    always give the same one. Used to draw a second view of an example
    without touching the seeds its first view uses.

    Args:
        seed: Integer tensor shaped `(2,)`.
        value: Python integer (or integer tensor) to fold in.

    Returns:
        An `int64` tensor shaped `(2,)`.
    """
    import tensorflow as tf

    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), value)


# RandAugment as the MLKD / UniKD authors use it for their strong view
# (FixMatch's variant: each operation draws its magnitude uniformly from its
# own range). Name, lowest and highest magnitude.
RAND_AUGMENT_OPS = (
    ("auto_contrast", 0.0, 1.0),
    ("brightness", 0.05, 0.95),
    ("color", 0.05, 0.95),
    ("contrast", 0.05, 0.95),
    ("equalize", 0.0, 1.0),
    ("identity", 0.0, 1.0),
    ("posterize", 4.0, 8.0),
    ("rotate", -30.0, 30.0),
    ("sharpness", 0.05, 0.95),
    ("shear_x", -0.3, 0.3),
    ("shear_y", -0.3, 0.3),
    ("solarize", 0.0, 256.0),
    ("translate_x", -0.3, 0.3),
    ("translate_y", -0.3, 0.3),
)

#: The operations `rand_augment` draws from for single-channel images: all
#: but "color" (saturation), which does nothing without colour.
GRAYSCALE_RAND_AUGMENT_OPS = tuple(name for name, _, _ in RAND_AUGMENT_OPS if name != "color")

_OP_RANGES = {name: (low, high) for name, low, high in RAND_AUGMENT_OPS}


def _clip_pixels(image):
    import tensorflow as tf

    return tf.clip_by_value(image, 0.0, 255.0)


def _blend(degenerate, image, factor):
    # PIL's Image.blend on 8-bit images: truncated towards zero, clipped.
    import tensorflow as tf

    return _clip_pixels(tf.floor(degenerate + factor * (image - degenerate)))


def _luma(image):
    # PIL's RGB -> L conversion (ITU-R 601-2, rounded), exact in float32.
    import tensorflow as tf

    if image.shape[-1] == 1:
        return image
    weights = tf.constant([19595.0, 38470.0, 7471.0])
    return tf.floor((tf.reduce_sum(image * weights, axis=-1, keepdims=True) + 32768.0) / 65536.0)


def _auto_contrast(image, _):
    import tensorflow as tf

    low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    span = high - low
    scale = 255.0 / tf.where(span > 0, span, 1.0)
    # A tiny margin so that `high` maps to 255 despite float round-off.
    stretched = _clip_pixels(tf.floor((image - low) * scale + 1e-3))
    return tf.where(span > 0, stretched, image)


def _brightness(image, factor):
    import tensorflow as tf

    return _blend(tf.zeros_like(image), image, factor)


def _color(image, factor):
    import tensorflow as tf

    if image.shape[-1] == 1:
        return image
    return _blend(tf.broadcast_to(_luma(image), tf.shape(image)), image, factor)


def _contrast(image, factor):
    import tensorflow as tf

    mean = tf.floor(tf.reduce_mean(_luma(image)) + 0.5)
    return _blend(tf.fill(tf.shape(image), mean), image, factor)


def _equalize(image, _):
    # PIL's ImageOps.equalize, all channels at once: per channel, with the
    # 256-bin histogram h, step = (number of pixels - h[last used value]) // 255
    # and lut[i] = (step // 2 + h[0] + ... + h[i - 1]) // step (no change when
    # step is 0).
    import tensorflow as tf

    channels = image.shape[-1]
    values = tf.transpose(tf.cast(tf.reshape(image, [-1, channels]), tf.int32))
    offsets = values + 256 * tf.range(channels)[:, None]
    histogram = tf.math.bincount(
        tf.reshape(offsets, [-1]), minlength=256 * channels, maxlength=256 * channels
    )
    histogram = tf.reshape(histogram, [channels, 256])
    last_used = 255 - tf.argmax(tf.reverse(histogram, [1]) > 0, axis=1, output_type=tf.int32)
    last_count = tf.gather(histogram, last_used, batch_dims=1)
    step = (tf.reduce_sum(histogram, axis=1) - last_count) // 255
    safe_step = tf.maximum(step, 1)[:, None]
    lut = (safe_step // 2 + tf.cumsum(histogram, axis=1, exclusive=True)) // safe_step
    lut = tf.cast(tf.clip_by_value(lut, 0, 255), tf.float32)
    equalized = tf.transpose(tf.gather(lut, values, batch_dims=1))
    equalized = tf.reshape(equalized, tf.shape(image))
    return tf.where(step > 0, equalized, image)


def _identity(image, _):
    return image


def _posterize(image, magnitude):
    import tensorflow as tf

    bits = tf.maximum(tf.floor(magnitude), 1.0)
    step = tf.pow(2.0, 8.0 - bits)
    return tf.floor(image / step) * step


def _sharpness(image, factor):
    import tensorflow as tf

    height, width, channels = image.shape
    if height < 3 or width < 3:
        return image
    # PIL's SMOOTH filter; the one-pixel border keeps its pixels.
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.pad(tf.round(smooth), [[1, 1], [1, 1], [0, 0]])
    inside = tf.pad(tf.ones([height - 2, width - 2, 1], tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(inside, smooth, image)
    return _blend(degenerate, image, factor)


def _solarize(image, threshold):
    import tensorflow as tf

    return tf.where(image < threshold, image, 255.0 - image)


def _affine(image, matrix):
    """Resamples `image` as PIL's `Image.transform(size, AFFINE, matrix)`.

    `matrix = (a, b, c, d, e, f)` maps an output point (x, y) to the input
    point (a x + b y + c, d x + e y + f), in PIL's coordinates where pixel
    i covers [i, i + 1). Nearest-neighbour sampling, zero outside.
    """
    import tensorflow as tf

    a, b, c, d, e, f = matrix
    # TensorFlow's coordinates put pixel centres at integers: shift by 1/2.
    transform = tf.stack(
        [a, b, c + 0.5 * (a + b - 1.0), d, e, f + 0.5 * (d + e - 1.0), 0.0, 0.0]
    )
    transform = tf.cast(tf.reshape(transform, [1, 8]), tf.float32)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return out[0]


def _rotate(image, degrees):
    import math

    import tensorflow as tf

    # PIL's Image.rotate: counter-clockwise about the image centre.
    height, width = image.shape[0], image.shape[1]
    cx, cy = width / 2.0, height / 2.0
    angle = -degrees * (math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    return _affine(
        image,
        (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy),
    )


def _shear_x(image, shear):
    return _affine(image, (1.0, shear, 0.0, 0.0, 1.0, 0.0))


def _shear_y(image, shear):
    return _affine(image, (1.0, 0.0, 0.0, shear, 1.0, 0.0))


def _translate_x(image, fraction):
    return _affine(image, (1.0, 0.0, fraction * image.shape[1], 0.0, 1.0, 0.0))


def _translate_y(image, fraction):
    return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, fraction * image.shape[0]))


_OPS = {
    "auto_contrast": _auto_contrast,
    "brightness": _brightness,
    "color": _color,
    "contrast": _contrast,
    "equalize": _equalize,
    "identity": _identity,
    "posterize": _posterize,
    "rotate": _rotate,
    "sharpness": _sharpness,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "solarize": _solarize,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}


def _check_image(image, fn):
    shape = image.shape
    if shape.rank != 3 or None in shape.as_list() or shape[-1] not in (1, 3):
        raise ValueError(
            f"{fn}: expects one image with a static shape (H, W, C), C = 1 or 3 "
            f"(batch images with `Dataset.batch` after the map); got shape {shape}."
        )


def apply_rand_augment_op(image, name, magnitude):
    """Applies one RandAugment operation at a given magnitude.

    The operations behave as PIL's on 8-bit images (the reference
    RandAugment is written with PIL): blends truncate, filters round, the
    geometric ones use nearest-neighbour sampling and fill with black. See
    `rand_augment` for the list and the magnitudes.

    Args:
        image: Tensor shaped `(H, W, C)`, C = 1 or 3, integer pixel values
            in [0, 255] (any real dtype).
        name: One of the names in `RAND_AUGMENT_OPS`.
        magnitude: Python float or scalar tensor, in the operation's units
            (a factor, degrees, a fraction of the image size, bits or a
            threshold).

    Returns:
        A `float32` tensor shaped like `image` with integer values in
        [0, 255].

    Raises:
        ValueError: If `name` is unknown or `image` is not a 3-D image
            with 1 or 3 channels.
    """
    import tensorflow as tf

    if name not in _OPS:
        raise ValueError(
            f"apply_rand_augment_op: unknown operation {name!r}; choose one of "
            f"{sorted(_OPS)}."
        )
    image = tf.convert_to_tensor(image)
    _check_image(image, "apply_rand_augment_op")
    image = tf.cast(image, tf.float32)
    out = _OPS[name](image, tf.cast(magnitude, tf.float32))
    return tf.ensure_shape(out, image.shape)


def rand_augment(image, seed, num_ops=2, ops=None):
    """RandAugment as the MLKD and UniKD authors use it: `num_ops` random
    operations, each at a uniformly random magnitude.

    Draws `num_ops` operations from `ops` (with replacement, as Python's
    `random.choices` in the reference) and applies them in turn, each with
    a magnitude drawn uniformly from its range in `RAND_AUGMENT_OPS`:

    | operation | magnitude range |
    | --- | --- |
    | auto_contrast, equalize, identity | (none) |
    | brightness, color, contrast, sharpness | blend factor in [0.05, 0.95] |
    | posterize | bits kept: floor of [4, 8] |
    | rotate | degrees in [-30, 30] |
    | shear_x, shear_y | shear in [-0.3, 0.3] |
    | solarize | threshold in [0, 256] |
    | translate_x, translate_y | fraction of the size in [-0.3, 0.3] |

    These are the 14 operations and ranges of the reference
    (`mdistiller/dataset/cifar100.py` in Jin-Ying/Multi-Level-Logit-
    Distillation and in the UniKD fork FabienCode/mdistiller), re-written
    in TensorFlow to behave as their PIL operations on 8-bit images.
    The reference appends Cutout inside its RandAugment; here it is the
    separate `cutout` (both together: `strong_augment`).

    Why not `keras.layers.RandAugment` (Keras 3.15): it has 11 operations
    (no identity, color is `RandomColorDegeneration` with other factors;
    brightness and contrast go both ways), draws magnitudes from one
    shared `factor`, and runs all 11 on every image; its seeds are stateful
    `SeedGenerator`s, not reproducible under parallel `tf.data` maps.
    keras-cv's RandAugment (last release April 2024) draws its magnitude
    from a normal distribution and is stateful too. This function draws
    everything from the stateless `seed`, so a pipeline is reproducible.

    Args:
        image: Tensor shaped `(H, W, C)`, C = 1 or 3, pixel values in
            [0, 255] (any real dtype; rounded to integers first).
        seed: Integer tensor shaped `(2,)`.
        num_ops: Number of operations applied (positive integer; the
            reference uses 2).
        ops: Names of the operations to draw from (default: all of
            `RAND_AUGMENT_OPS`, or `GRAYSCALE_RAND_AUGMENT_OPS` for
            single-channel images).

    Returns:
        A `float32` tensor shaped like `image`, integer values in [0, 255].

    Raises:
        ValueError: If `num_ops` is not a positive integer, `ops` is empty
            or names an unknown operation, or `image` is not a 3-D image
            with 1 or 3 channels and a static shape.
    """
    import tensorflow as tf

    fn = "rand_augment"
    check_positive_int("num_ops", num_ops, fn=fn)
    image = tf.convert_to_tensor(image)
    _check_image(image, fn)
    if ops is None:
        ops = (
            GRAYSCALE_RAND_AUGMENT_OPS
            if image.shape[-1] == 1
            else tuple(name for name, _, _ in RAND_AUGMENT_OPS)
        )
    if isinstance(ops, str):
        ops = (ops,)
    ops = tuple(ops)
    unknown = [name for name in ops if name not in _OPS]
    if not ops or unknown:
        raise ValueError(
            f"{fn}: `ops` must be a non-empty sequence of names from {sorted(_OPS)}; "
            f"got {ops!r}."
        )
    image = _clip_pixels(tf.round(tf.cast(image, tf.float32)))
    op_seed, magnitude_seed = split_seed(seed, 2)
    indices = tf.random.stateless_uniform(
        [num_ops], op_seed, minval=0, maxval=len(ops), dtype=tf.int32
    )
    uniforms = tf.random.stateless_uniform([num_ops], magnitude_seed)
    shape = image.shape

    def apply_one(i, image):
        branches = []
        for name in ops:
            low, high = _OP_RANGES[name]
            magnitude = low + (high - low) * uniforms[i]
            branches.append(
                lambda op=_OPS[name], m=magnitude: tf.ensure_shape(op(image, m), shape)
            )
        return i + 1, tf.switch_case(indices[i], branches)

    # A loop builds the operations' graphs once, not once per draw.
    _, image = tf.while_loop(
        lambda i, _: i < num_ops, apply_one, (tf.constant(0), image), maximum_iterations=num_ops
    )
    return tf.ensure_shape(image, shape)


def cutout(image, seed, max_size, fill):
    """Fills one random square of side 1 to `max_size` pixels with `fill`.

    The side is drawn uniformly from {1, ..., max_size} and the square's
    centre uniformly among the pixels; the square is clipped at the image
    border (so near an edge only part of it lies in the image). This is
    the Cutout of the reference strong view, where the side is
    `int(u * 0.5 * 32) + 1` for a uniform `u`, i.e. uniform in
    {1, ..., 16} on CIFAR; the reference clamps the square's top-left
    corner into the image instead of clipping there, and fills with the
    fixed colour (125, 123, 114) (the CIFAR-10 mean) where we take the
    dataset's mean colour as the `fill` argument.

    Args:
        image: Tensor shaped `(H, W, C)`, any real dtype.
        seed: Integer tensor shaped `(2,)`.
        max_size: Largest side (positive Python integer), e.g. 16 for
            32 x 32 images.
        fill: Fill value, a scalar or one value per channel, in the
            image's scale (e.g. `255 * mean` for images in [0, 255]).

    Returns:
        A `float32` tensor shaped like `image`.

    Raises:
        ValueError: If `max_size` is not a positive integer, `fill` has
            neither 1 nor C values, or `image` is not 3-D with a static
            number of channels.
    """
    import tensorflow as tf

    fn = "cutout"
    check_positive_int("max_size", max_size, fn=fn)
    image = tf.cast(tf.convert_to_tensor(image), tf.float32)
    if image.shape.rank != 3 or image.shape[-1] is None:
        raise ValueError(
            f"{fn}: expects one image shaped (H, W, C) with a known number of "
            f"channels; got shape {image.shape}."
        )
    fill = check_per_channel("fill", fill, image.shape[-1], fn=fn)
    size_seed, row_seed, col_seed = split_seed(seed, 3)
    shape = tf.shape(image)
    side = tf.random.stateless_uniform(
        [], size_seed, minval=1, maxval=max_size + 1, dtype=tf.int32
    )
    row = tf.random.stateless_uniform([], row_seed, minval=0, maxval=shape[0], dtype=tf.int32)
    col = tf.random.stateless_uniform([], col_seed, minval=0, maxval=shape[1], dtype=tf.int32)
    top, left = row - side // 2, col - side // 2
    rows = tf.range(shape[0])
    cols = tf.range(shape[1])
    in_rows = (rows >= top) & (rows < top + side)
    in_cols = (cols >= left) & (cols < left + side)
    mask = in_rows[:, None, None] & in_cols[None, :, None]
    return tf.where(mask, tf.constant(fill), image)


def strong_augment(image, seed, fill, num_ops=2, cutout_size=None, ops=None):
    """The reference strong-view transform: `rand_augment`, then `cutout`.

    Args:
        image: Tensor shaped `(H, W, C)`, C = 1 or 3, static shape, pixel
            values in [0, 255] (already flipped and cropped, if wanted).
        seed: Integer tensor shaped `(2,)`.
        fill: Cutout's fill colour in [0, 255] (scalar or one value per
            channel), normally the dataset's mean colour.
        num_ops: Number of RandAugment operations (the reference: 2).
        cutout_size: Largest Cutout side in pixels; default half the
            shorter image side (16 for 32 x 32 images, as the reference's
            `0.5 * width`).
        ops: RandAugment's operations (see `rand_augment`).

    Returns:
        A `float32` tensor shaped like `image`, values in [0, 255].

    Raises:
        ValueError: On bad arguments (see `rand_augment` and `cutout`).
    """
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    _check_image(image, "strong_augment")
    if cutout_size is None:
        cutout_size = max(1, min(image.shape[0], image.shape[1]) // 2)
    check_positive_int("cutout_size", cutout_size, fn="strong_augment")
    augment_seed, cutout_seed = split_seed(seed, 2)
    image = rand_augment(image, augment_seed, num_ops=num_ops, ops=ops)
    return cutout(image, cutout_seed, cutout_size, fill)
