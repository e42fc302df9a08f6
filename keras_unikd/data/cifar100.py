"""CIFAR-100 `tf.data` pipelines (standard KD recipe) from TensorFlow Datasets.

Training images get the usual CIFAR augmentation (random crop 32 with 4
pixels of zero padding, random horizontal flip) and every image is
normalised per channel with the CIFAR-100 statistics used by the standard
KD code bases (`CIFAR100_MEAN`, `CIFAR100_STD`).
"""

from keras_unikd.data import augment as aug

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR100_PADDING = 4
CIFAR100_TRAIN_SIZE = 50_000

_FN = "cifar100_datasets"

_HINT = (
    "Prepare CIFAR-100 once on a machine with internet access, either with "
    "the TFDS command line `tfds build cifar100 --data_dir=DIR` or by "
    "calling `cifar100_datasets(data_dir=DIR, download=True)`, then pass "
    "`data_dir=DIR` (or set $TFDS_DATA_DIR). Without internet access, put "
    "cifar-100-binary.tar.gz (from "
    "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz) in a folder "
    "MANUAL and run `tfds build cifar100 --data_dir=DIR --manual_dir=MANUAL` "
    "(the default manual folder is DIR/downloads/manual)."
)


def cifar100_train_map(strong_augmenter=None):
    """Returns the per-example training map function.

    The function maps `((image, label), seed)` (see
    `augment.with_example_seeds`) to `(image, label)` with a flipped and
    padded-random-cropped `uint8` image, or, when `strong_augmenter` is
    given, to `((weak, strong), label)`: `weak` as above and `strong` an
    independently flipped and cropped copy passed through
    `strong_augmenter` (`float32` in [0, 255]). Labels become `int32`.
    Images are not normalised yet (see `cifar100_normalize`).

    Args:
        strong_augmenter: Optional callable mapping a `float32` image in
            [0, 255] shaped `(32, 32, 3)` to an image of the same shape and
            range, e.g. `keras_cv.layers.RandAugment(value_range=(0, 255))`.

    Returns:
        A function usable with `tf.data.Dataset.map`.
    """
    import tensorflow as tf

    def weak_view(image, seed):
        flip_seed, crop_seed = aug.split_seed(seed, 2)
        image = aug.random_flip(image, flip_seed)
        return aug.pad_and_random_crop(image, CIFAR100_PADDING, crop_seed)

    def train_map(example, seed):
        image, label = example
        label = tf.cast(label, tf.int32)
        if strong_augmenter is None:
            return weak_view(image, seed), label
        weak_seed, strong_seed = aug.split_seed(seed, 2)
        weak = weak_view(image, weak_seed)
        strong = tf.cast(weak_view(image, strong_seed), tf.float32)
        strong = tf.ensure_shape(strong_augmenter(strong), strong.shape)
        return (weak, tf.cast(strong, tf.float32)), label

    return train_map


def cifar100_normalize(images):
    """Normalises CIFAR-100 images (or batches) with the standard statistics.

    Computes `(images / 255 - CIFAR100_MEAN) / CIFAR100_STD` per channel.

    Args:
        images: Tensor with pixel values in [0, 255] and 3 channels last.

    Returns:
        A `float32` tensor of the same shape.
    """
    return aug.normalize(images, CIFAR100_MEAN, CIFAR100_STD)


def _normalize_batch(images, labels):
    import tensorflow as tf

    return tf.nest.map_structure(cifar100_normalize, images), labels


def cifar100_datasets(
    batch_size=64,
    data_dir=None,
    strong_augment=False,
    shuffle_seed=None,
    take=None,
    eval_batch_size=None,
    drop_remainder=False,
    download=True,
):
    """Builds the CIFAR-100 training and test `tf.data` pipelines.

    Both splits are loaded with
    `tfds.load("cifar100", split=..., as_supervised=True, data_dir=...)`
    and cached in memory after decoding (about 180 MB for both).

    - Training pipeline: reshuffled every epoch (the buffer holds the
      whole split), random horizontal flip, random 32x32 crop of the image
      zero-padded by 4 pixels, per-channel normalisation
      `(x / 255 - CIFAR100_MEAN) / CIFAR100_STD`, batched and prefetched.
      Elements are `(images, labels)`: `float32` images shaped
      `(batch, 32, 32, 3)` and `int32` labels shaped `(batch,)`.
    - With `strong_augment`, the training elements are instead
      `((weak, strong), labels)` for weak/strong-view distillation
      (MLKD-style): `weak` is the standard augmentation above and `strong`
      an independently flipped and cropped view of the same image further
      transformed by RandAugment (`keras_cv.layers.RandAugment` with
      `value_range=(0, 255)`, applied before normalisation); both are
      normalised `float32` batches shaped `(batch, 32, 32, 3)`.
    - Test pipeline: normalisation only, in the dataset order, same
      element structure as the plain training pipeline.

    Augmentation is stateless (per-example seeds), runs in parallel maps
    (`num_parallel_calls=tf.data.AUTOTUNE`) and works with every Keras
    backend (the pipelines are plain `tf.data`; keras-cv layers run in
    TensorFlow inside `tf.data` also under the JAX and PyTorch backends).
    Without `shuffle_seed`, the training pipeline is non-deterministic so
    that the parallel maps keep every CPU core busy.

    Args:
        batch_size: Training batch size.
        data_dir: TFDS data directory (default `$TFDS_DATA_DIR` or
            `~/tensorflow_datasets`).
        strong_augment: False, True (default `RandAugment`) or a callable
            mapping a `float32` image in [0, 255] shaped `(32, 32, 3)` to
            one of the same shape and range (e.g. a configured
            `keras_cv.layers.RandAugment`), used for the strong view.
        shuffle_seed: Optional integer making the shuffle order, the
            flips/crops and the element order reproducible (the RandAugment
            view is seeded too but not bit-reproducible under parallel
            maps).
        take: Optional number of examples kept from each split (the first
            ones, before shuffling), for smoke runs.
        eval_batch_size: Test batch size; defaults to `batch_size`.
        drop_remainder: Whether the training pipeline drops its last
            incomplete batch (the test pipeline never does).
        download: Whether TFDS may download and prepare the data when it
            is not in `data_dir`.

    Returns:
        A tuple `(train_ds, test_ds)` of `tf.data.Dataset`s.

    Raises:
        ValueError: If `batch_size`, `eval_batch_size` or `take` is not a
            positive integer, or `strong_augment` is neither a bool nor a
            callable.
        RuntimeError: If the dataset is not prepared in `data_dir` and
            cannot be downloaded; the message explains how to prepare it.

    Example:

    ```python
    train_ds, test_ds = cifar100_datasets(batch_size=64, data_dir="~/tfds")
    model.fit(train_ds, validation_data=test_ds, epochs=240)
    ```
    """
    import tensorflow as tf

    aug.check_positive_int(batch_size, "batch_size", _FN)
    aug.check_positive_int(
        eval_batch_size, "eval_batch_size", _FN, allow_none=True
    )
    aug.check_positive_int(take, "take", _FN, allow_none=True)
    if strong_augment is True:
        import keras_cv

        strong_augmenter = keras_cv.layers.RandAugment(
            value_range=(0, 255), seed=shuffle_seed
        )
    elif strong_augment is False or strong_augment is None:
        strong_augmenter = None
    elif callable(strong_augment):
        strong_augmenter = strong_augment
    else:
        raise ValueError(
            f"{_FN}: `strong_augment` must be True, False or a callable "
            f"image transform; got {strong_augment!r}."
        )
    eval_batch_size = eval_batch_size or batch_size
    autotune = tf.data.AUTOTUNE

    def load(split):
        ds = aug.load_tfds_split(
            "cifar100",
            split,
            data_dir=data_dir,
            fn=_FN,
            hint=_HINT,
            download=download,
        )
        if take is not None:
            ds = ds.take(take)
        return ds.cache()

    train = load("train")
    test = load("test")

    buffer = take or CIFAR100_TRAIN_SIZE
    train = train.shuffle(
        buffer, seed=shuffle_seed, reshuffle_each_iteration=True
    )
    train = aug.with_example_seeds(train, shuffle_seed).map(
        cifar100_train_map(strong_augmenter), num_parallel_calls=autotune
    )
    train = train.batch(batch_size, drop_remainder=drop_remainder)
    train = train.map(_normalize_batch, num_parallel_calls=autotune)
    train = train.prefetch(autotune).with_options(
        aug.fast_options(deterministic=shuffle_seed is not None)
    )

    test = test.batch(eval_batch_size).map(
        lambda images, labels: (
            cifar100_normalize(images),
            tf.cast(labels, tf.int32),
        ),
        num_parallel_calls=autotune,
    )
    test = test.prefetch(autotune).with_options(
        aug.fast_options(deterministic=True)
    )
    return train, test
