"""ImageNet (ILSVRC 2012) `tf.data` pipelines from TensorFlow Datasets.

The standard recipe of the KD literature: random-resized-crop + horizontal
flip for training; resize the shorter side to `image_size * 256 / 224` and
center-crop `image_size` for evaluation; per-channel normalisation with the
usual ImageNet statistics (`IMAGENET_MEAN`, `IMAGENET_STD`).

TFDS's `imagenet2012` cannot be downloaded automatically: the ILSVRC2012
tar files must be put in the TFDS manual directory first (see
`imagenet_datasets`).
"""

from keras_unikd.data import augment as aug
from keras_unikd.validation import check_positive_int

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FN = "imagenet_datasets"


def _hint(data_dir, manual_dir):
    import os

    root = aug.default_tfds_data_dir(data_dir)
    manual = manual_dir or os.path.join(root, "downloads", "manual")
    return (
        "imagenet2012 needs a manual download: register on "
        "https://image-net.org/download-images, download "
        "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar and put both "
        f"tar files (not extracted) in the TFDS manual directory {manual!r} "
        "(the default is DATA_DIR/downloads/manual; choose another one with "
        "`imagenet_datasets(manual_dir=...)`). Then call "
        "`imagenet_datasets(data_dir=DATA_DIR, download=True)` once, or run "
        "`tfds build imagenet2012 --data_dir=DATA_DIR "
        "--manual_dir=MANUAL_DIR`, to prepare the dataset (about 150 GB; "
        "this takes hours)."
    )


def imagenet_normalize(images):
    """Normalises ImageNet images (or batches) with the standard statistics.

    Computes `(images / 255 - IMAGENET_MEAN) / IMAGENET_STD` per channel.

    Args:
        images: Tensor with pixel values in [0, 255] and 3 channels last.

    Returns:
        A `float32` tensor of the same shape.
    """
    return aug.normalize(images, IMAGENET_MEAN, IMAGENET_STD)


def eval_resize_size(image_size):
    """Shorter-side size before the evaluation center crop.

    Args:
        image_size: Final (cropped) image size.

    Returns:
        `round(image_size * 256 / 224)` (256 for 224).
    """
    return int(round(image_size * 256 / 224))


def _decode(image):
    import tensorflow as tf

    if image.dtype == tf.string:
        image = tf.io.decode_jpeg(image, channels=3)
    return image


def imagenet_train_map(image_size=224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Returns the per-example ImageNet training map function.

    The function maps `((image, label), seed)` (see
    `augment.with_example_seeds`), where `image` is an encoded JPEG string
    or a decoded `uint8` image, to `(image, label)`: a random-resized crop
    of size `image_size` (see `augment.random_resized_crop`), randomly
    flipped left-right, `float32` in [0, 255] (not normalised yet), and an
    `int32` label.

    Args:
        image_size: Output height and width.
        scale: `(min, max)` fraction of the image area to crop.
        ratio: `(min, max)` aspect ratio (width / height) of the crop.

    Returns:
        A function usable with `tf.data.Dataset.map`.
    """
    import tensorflow as tf

    def train_map(example, seed):
        image, label = example
        crop_seed, flip_seed = aug.split_seed(seed, 2)
        image = aug.random_resized_crop(
            _decode(image), image_size, crop_seed, scale=scale, ratio=ratio
        )
        image = aug.random_flip(image, flip_seed)
        return image, tf.cast(label, tf.int32)

    return train_map


def imagenet_eval_map(image_size=224):
    """Returns the per-example ImageNet evaluation map function.

    The function maps `(image, label)`, where `image` is an encoded JPEG
    string or a decoded `uint8` image, to `(image, label)`: the image
    resized so that its shorter side is `eval_resize_size(image_size)`,
    then center-cropped to `image_size`, `float32` in [0, 255] (not
    normalised yet), and an `int32` label.

    Args:
        image_size: Output height and width.

    Returns:
        A function usable with `tf.data.Dataset.map`.
    """
    import tensorflow as tf

    resize_size = eval_resize_size(image_size)

    def eval_map(image, label):
        image = aug.resize_shorter_side(_decode(image), resize_size)
        return aug.center_crop(image, image_size), tf.cast(label, tf.int32)

    return eval_map


def _normalize_batch(images, labels):
    return imagenet_normalize(images), labels


def imagenet_datasets(
    batch_size=256,
    data_dir=None,
    image_size=224,
    take=None,
    shuffle_seed=None,
    eval_batch_size=None,
    shuffle_buffer=10_000,
    drop_remainder=False,
    manual_dir=None,
    download=True,
):
    """Builds the ImageNet training and validation `tf.data` pipelines.

    Both splits are loaded with `tfds.load("imagenet2012", split=...,
    as_supervised=True, data_dir=...)`, keeping the JPEGs encoded until
    after shuffling (the shuffle buffer holds compressed images).

    - Training pipeline (split `"train"`, files shuffled, examples
      shuffled in a buffer of `shuffle_buffer`): random-resized crop
      (area fraction in (0.08, 1), aspect ratio in (3/4, 4/3), sampled with
      `tf.image.stateless_sample_distorted_bounding_box` on the decoded
      image, resized to `image_size` with antialiased bilinear
      interpolation), random horizontal flip, per-channel normalisation
      `(x / 255 - IMAGENET_MEAN) / IMAGENET_STD`.
    - Validation pipeline (split `"validation"`, in order): shorter side
      resized to `image_size * 256 / 224` (256 for 224), center crop of
      `image_size`, same normalisation.

    Elements are `(images, labels)`: `float32` images shaped
    `(batch, image_size, image_size, 3)` and `int32` labels shaped
    `(batch,)`. Maps run with `num_parallel_calls=tf.data.AUTOTUNE`;
    without `shuffle_seed` the training pipeline is non-deterministic so
    that they keep every CPU core busy.

    The data must be prepared first: TFDS cannot download ImageNet. Put
    `ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` (from
    https://image-net.org, registration needed) in the TFDS manual
    directory, by default `DATA_DIR/downloads/manual` where `DATA_DIR` is
    `data_dir` (default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`), or in
    a folder passed as `manual_dir`; the first call with `download=True`
    then prepares the dataset (hours, about 150 GB).

    Args:
        batch_size: Training batch size.
        data_dir: TFDS data directory.
        image_size: Output image height and width.
        take: Optional number of examples kept from each split, for smoke
            runs (from the shuffled files for training, the first ones for
            validation).
        shuffle_seed: Optional integer making the file and example shuffle,
            the augmentation and the element order reproducible.
        eval_batch_size: Validation batch size; defaults to `batch_size`.
        shuffle_buffer: Number of (encoded) training examples in the
            shuffle buffer.
        drop_remainder: Whether the training pipeline drops its last
            incomplete batch (the validation pipeline never does).
        manual_dir: Folder holding the ILSVRC2012 tar files, used when the
            dataset has to be prepared. Defaults to TFDS's
            `DATA_DIR/downloads/manual`.
        download: Whether TFDS may prepare the dataset (from the manual
            directory) when it is not in `data_dir`.

    Returns:
        A tuple `(train_ds, val_ds)` of `tf.data.Dataset`s.

    Raises:
        ValueError: If `batch_size`, `eval_batch_size`, `image_size`,
            `take` or `shuffle_buffer` is not a positive integer.
        RuntimeError: If the dataset is not prepared and cannot be
            prepared; the message says where to put the tar files.

    Example:

    ```python
    train_ds, val_ds = imagenet_datasets(batch_size=256, data_dir="/data/tfds")
    model.fit(train_ds, validation_data=val_ds, epochs=100)
    ```
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    check_positive_int("batch_size", batch_size, fn=_FN)
    check_positive_int("eval_batch_size", eval_batch_size, fn=_FN, allow_none=True)
    check_positive_int("image_size", image_size, fn=_FN)
    check_positive_int("take", take, fn=_FN, allow_none=True)
    check_positive_int("shuffle_buffer", shuffle_buffer, fn=_FN)
    eval_batch_size = eval_batch_size or batch_size
    autotune = tf.data.AUTOTUNE
    prepare_kwargs = {}
    if manual_dir is not None:
        prepare_kwargs["download_config"] = tfds.download.DownloadConfig(
            manual_dir=str(manual_dir)
        )
    hint = _hint(data_dir, manual_dir)

    def load(split, shuffle_files):
        ds = aug.load_tfds_split(
            "imagenet2012",
            split,
            data_dir=data_dir,
            fn=_FN,
            hint=hint,
            download=download,
            shuffle_files=shuffle_files,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed),
            download_and_prepare_kwargs=prepare_kwargs or None,
        )
        if take is not None:
            ds = ds.take(take)
        return ds

    train = load("train", shuffle_files=True)
    train = train.shuffle(
        min(shuffle_buffer, take or shuffle_buffer),
        seed=shuffle_seed,
        reshuffle_each_iteration=True,
    )
    train = aug.with_example_seeds(train, shuffle_seed).map(
        imagenet_train_map(image_size), num_parallel_calls=autotune
    )
    train = train.batch(batch_size, drop_remainder=drop_remainder)
    train = train.map(_normalize_batch, num_parallel_calls=autotune)
    train = train.prefetch(autotune).with_options(
        aug.fast_options(deterministic=shuffle_seed is not None)
    )

    val = load("validation", shuffle_files=False)
    val = val.map(imagenet_eval_map(image_size), num_parallel_calls=autotune)
    val = val.batch(eval_batch_size)
    val = val.map(_normalize_batch, num_parallel_calls=autotune)
    val = val.prefetch(autotune).with_options(
        aug.fast_options(deterministic=True)
    )
    return train, val
