"""Shared `tf.data` building blocks for the TFDS image pipelines.

Per-example augmentations (random flip, padded random crop, random-resized
crop), evaluation resizing (shorter-side resize, center crop), per-channel
normalisation, per-example random seeds and a `tfds.load` wrapper that turns
"dataset not prepared" failures into actionable errors. They are used by
`cifar100_datasets` and `imagenet_datasets`.

All image functions take and return TensorFlow tensors and run inside
`tf.data` pipelines, whatever the Keras backend. Randomness is stateless:
every random function takes a `seed`, an integer tensor shaped `(2,)`
(see `with_example_seeds` and `split_seed`).
"""

import numbers
import os


def check_positive_int(value, name, fn, allow_none=False):
    """Raises a `ValueError` unless `value` is a positive integer.

    Args:
        value: The value to check.
        name: Argument name, used in the message.
        fn: Calling function name, used in the message.
        allow_none: Whether `None` is accepted.

    Raises:
        ValueError: If `value` is not a positive integer (or None when
            `allow_none` is True).
    """
    if allow_none and value is None:
        return
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < 1
    ):
        raise ValueError(
            f"{fn}: `{name}` must be a positive integer"
            f"{' or None' if allow_none else ''}; got {value!r}."
        )


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
    are re-raised as a `RuntimeError` whose message says how to prepare
    the data (`hint`) and quotes the original TFDS error.

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
        RuntimeError: If the dataset is not available.
    """
    import tensorflow_datasets as tfds

    try:
        return tfds.load(
            name,
            split=split,
            as_supervised=True,
            data_dir=data_dir,
            **load_kwargs,
        )
    except _unavailable_errors() as err:
        raise RuntimeError(
            f"{fn}: could not load the TFDS dataset '{name}' (split "
            f"'{split}') from data_dir={default_tfds_data_dir(data_dir)!r}.\n"
            f"{hint}\nOriginal error ({type(err).__name__}): {err}"
        ) from err


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
