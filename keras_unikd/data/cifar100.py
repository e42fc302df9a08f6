"""CIFAR-100 `tf.data` pipelines (standard KD recipe) from TensorFlow Datasets.

Training images get the usual CIFAR augmentation (random crop 32 with 4
pixels of zero padding, random horizontal flip) and every image is
normalised per channel with the CIFAR-100 statistics used by the standard
KD code bases (`CIFAR100_MEAN`, `CIFAR100_STD`). With `two_views=True` the
training pipeline also yields the strong view of MLKD and UniMLKD
(`cifar100_strong_view`: RandAugment, 2 of 14 operations at random
magnitudes, then Cutout filled with the mean colour).
"""

import types

from keras_unikd.data import augment as aug
from keras_unikd.validation import check_bool
from keras_unikd.validation import check_positive_int

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR100_PADDING = 4
CIFAR100_TRAIN_SIZE = 50_000
#: Cutout's fill in the strong view: the mean colour in [0, 255] (it
#: normalises to 0).
CIFAR100_CUTOUT_FILL = tuple(255.0 * m for m in CIFAR100_MEAN)
#: Largest Cutout side in the strong view (the reference: half of 32).
CIFAR100_CUTOUT_SIZE = 16

#: The fields of `cifar100_keyed_augmentation()` as keyword arguments of the
#: keyed functions (`make_keyed_image_pipeline(..., **CIFAR100_KEYED_OPTIONS)`).
CIFAR100_KEYED_OPTIONS = types.MappingProxyType(
    {
        "augment": True,
        "crop_padding": CIFAR100_PADDING,
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "cutout_size": CIFAR100_CUTOUT_SIZE,
    }
)


def cifar100_keyed_augmentation():
    """The standard CIFAR-100 recipe as a `keras_unikd.data.KeyedAugmentation`.

    With it, a keyed pipeline's weak view is `cifar100_weak_view` and its
    strong view `cifar100_strong_view` (both of the keyed view seed),
    normalised as `cifar100_normalize` does: the views of `cifar100_datasets`,
    keyed by `(seed, epoch, index)`.

    Example:

    >>> cifar100_keyed_augmentation().crop_padding
    4
    """
    from keras_unikd.data.keyed import KeyedAugmentation

    return KeyedAugmentation(**CIFAR100_KEYED_OPTIONS)

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


def cifar100_weak_view(image, seed):
    """The standard CIFAR training augmentation of one image.

    A random horizontal flip, then a random 32 x 32 crop of the image
    zero-padded by 4 pixels (`CIFAR100_PADDING`).

    Args:
        image: Tensor shaped `(32, 32, 3)`, pixel values in [0, 255].
        seed: Integer tensor shaped `(2,)`.

    Returns:
        A tensor shaped and typed like `image`.
    """
    flip_seed, crop_seed = aug.split_seed(seed, 2)
    image = aug.random_flip(image, flip_seed)
    return aug.pad_and_random_crop(image, CIFAR100_PADDING, crop_seed)


def cifar100_strong_view(image, seed, num_ops=2):
    """The strong view of MLKD and UniMLKD for one CIFAR-100 image.

    As the authors' code builds it (`mdistiller/dataset/cifar100.py` of
    Jin-Ying/Multi-Level-Logit-Distillation and of the UniKD fork
    FabienCode/mdistiller): a flip and padded crop of its own (drawn
    independently of the weak view's), then RandAugment (`num_ops` of 14
    operations, each at a uniformly random magnitude:
    `augment.rand_augment`), then Cutout of one square of side 1 to 16
    pixels (`augment.cutout`) filled with the CIFAR-100 mean colour
    (`CIFAR100_CUTOUT_FILL`; the reference fills with (125, 123, 114)).
    RandAugment is our own TensorFlow re-implementation of the reference's
    PIL operations, not `keras.layers.RandAugment` or keras-cv's (see
    `augment.rand_augment` for why); it is stateless, so the view is
    reproducible from `seed` under parallel maps.

    Args:
        image: Tensor shaped `(32, 32, 3)`, pixel values in [0, 255].
        seed: Integer tensor shaped `(2,)`.
        num_ops: Number of RandAugment operations (the reference: 2).

    Returns:
        A `float32` tensor shaped `(32, 32, 3)`, values in [0, 255], not
        normalised yet (see `cifar100_normalize`).
    """
    view_seed, augment_seed = aug.split_seed(seed, 2)
    image = cifar100_weak_view(image, view_seed)
    return aug.strong_augment(
        image,
        augment_seed,
        fill=CIFAR100_CUTOUT_FILL,
        num_ops=num_ops,
        cutout_size=CIFAR100_CUTOUT_SIZE,
    )


def cifar100_train_map(strong_augmenter=None, two_views=False):
    """Returns the per-example training map function.

    The function maps `((image, label), seed)` (see
    `augment.with_example_seeds`) to `(image, label)` with a flipped and
    padded-random-cropped `uint8` image (`cifar100_weak_view`), or, with
    `two_views` (or a `strong_augmenter`), to `((weak, strong), label)`:
    `weak` exactly the single-view image for the same seed and `strong`
    the `float32` view `cifar100_strong_view` (or, with
    `strong_augmenter`, an independently flipped and cropped copy passed
    through it), drawn from a seed derived from the example's
    (`augment.fold_seed(seed, 1)`). Labels become `int32`. Images are not
    normalised yet (see `cifar100_normalize`).

    Args:
        strong_augmenter: Optional callable mapping a `float32` image in
            [0, 255] shaped `(32, 32, 3)` to an image of the same shape and
            range, replacing RandAugment and Cutout in the strong view;
            implies two views.
        two_views: Whether to yield `((weak, strong), label)`.

    Returns:
        A function usable with `tf.data.Dataset.map`.

    Raises:
        ValueError: If `strong_augmenter` is neither None nor callable.
    """
    import tensorflow as tf

    if strong_augmenter is not None and not callable(strong_augmenter):
        raise ValueError(
            "cifar100_train_map: `strong_augmenter` must be None or a callable "
            f"image transform; got {strong_augmenter!r}."
        )
    two_views = bool(two_views) or strong_augmenter is not None

    def strong_view(image, seed):
        if strong_augmenter is None:
            return cifar100_strong_view(image, seed)
        strong = tf.cast(cifar100_weak_view(image, seed), tf.float32)
        strong = tf.ensure_shape(strong_augmenter(strong), strong.shape)
        return tf.cast(strong, tf.float32)

    def train_map(example, seed):
        image, label = example
        label = tf.cast(label, tf.int32)
        weak = cifar100_weak_view(image, seed)
        if not two_views:
            return weak, label
        return (weak, strong_view(image, aug.fold_seed(seed, 1))), label

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


def _normalize_batch(images, labels, *row):
    import tensorflow as tf

    from keras_unikd.data.example_index import indexed

    images = tf.nest.map_structure(cifar100_normalize, images)
    return (indexed(images, row[0]) if row else images), labels


def cifar100_datasets(
    batch_size=64,
    data_dir=None,
    strong_augment=False,
    shuffle_seed=None,
    take=None,
    eval_batch_size=None,
    drop_remainder=False,
    download=True,
    two_views=False,
    with_example_index=False,
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
    - With `two_views=True`, the training elements are instead
      `((weak, strong), labels)` for weak/strong-view distillation (MLKD,
      UniMLKD): `weak` is the standard augmentation above (for the same
      `shuffle_seed`, the very batches of the single-view pipeline) and
      `strong` the authors' strong view of the same images,
      `cifar100_strong_view` (its own flip and crop, RandAugment with 2 of
      14 operations at uniformly random magnitudes, Cutout of up to 16
      pixels filled with the mean colour); both are normalised the same
      way, `float32` batches shaped `(batch, 32, 32, 3)`.
    - Test pipeline: normalisation only, in the dataset order, always
      single view: `(images, labels)`.
    - With `with_example_index=True`, the training inputs carry each
      example's row in the training split (its TFDS order, the rows of
      `cifar100_train_arrays`), for terms that read it (CRD):
      `({"inputs": x, "example_index": index}, labels)` (see
      `keras_unikd.data.example_index`).

    Augmentation is stateless (per-example seeds), runs in parallel maps
    (`num_parallel_calls=tf.data.AUTOTUNE`) and works with every Keras
    backend (the pipelines are plain `tf.data`, run by TensorFlow also
    under the JAX and PyTorch backends). Without `shuffle_seed`, the
    training pipeline is non-deterministic so that the parallel maps keep
    every CPU core busy.

    Args:
        batch_size: Training batch size.
        data_dir: TFDS data directory (default `$TFDS_DATA_DIR` or
            `~/tensorflow_datasets`).
        strong_augment: False, True (the same as `two_views=True`) or a
            callable mapping a `float32` image in [0, 255] shaped
            `(32, 32, 3)` to one of the same shape and range, used for the
            strong view instead of RandAugment and Cutout (it implies two
            views; its randomness is its own, so it may not be
            reproducible).
        shuffle_seed: Optional integer making the shuffle order, the
            augmentation of both views and the element order reproducible.
        take: Optional number of examples kept from each split (the first
            ones, before shuffling), for smoke runs.
        eval_batch_size: Test batch size; defaults to `batch_size`.
        drop_remainder: Whether the training pipeline drops its last
            incomplete batch (the test pipeline never does).
        download: Whether TFDS may download and prepare the data when it
            is not in `data_dir`.
        two_views: Whether the training pipeline yields
            `((weak, strong), labels)` (see above).
        with_example_index: Whether the training inputs carry the
            examples' rows (see above).

    Returns:
        A tuple `(train_ds, test_ds)` of `tf.data.Dataset`s.

    Raises:
        ValueError: If `batch_size`, `eval_batch_size` or `take` is not a
            positive integer, `strong_augment` is neither a bool nor a
            callable, or `two_views` is not a bool.
        RuntimeError: If the dataset is not prepared in `data_dir` and
            cannot be downloaded; the message explains how to prepare it.

    Example:

    ```python
    train_ds, test_ds = cifar100_datasets(batch_size=64, data_dir="~/tfds")
    model.fit(train_ds, validation_data=test_ds, epochs=240)
    # MLKD / UniMLKD: batches ((weak, strong), labels).
    train_ds, test_ds = cifar100_datasets(batch_size=64, two_views=True)
    ```
    """
    import tensorflow as tf

    check_positive_int("batch_size", batch_size, fn=_FN)
    check_positive_int("eval_batch_size", eval_batch_size, fn=_FN, allow_none=True)
    check_positive_int("take", take, fn=_FN, allow_none=True)
    check_bool("two_views", two_views, fn=_FN)
    check_bool("with_example_index", with_example_index, fn=_FN)
    if strong_augment is True:
        two_views, strong_augmenter = True, None
    elif strong_augment is False or strong_augment is None:
        strong_augmenter = None
    elif callable(strong_augment):
        strong_augmenter = strong_augment
    else:
        raise ValueError(
            f"{_FN}: `strong_augment` must be True, False or a callable "
            f"image transform; got {strong_augment!r}. For the authors' strong "
            "view pass `two_views=True`."
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

    train_map = cifar100_train_map(strong_augmenter, two_views=two_views)
    if with_example_index:
        # Each example carries its row after the label until the batch is
        # normalised: (image, label, index).
        train = train.enumerate().map(lambda row, ex: (*ex, tf.cast(row, tf.int32)))
        plain_map = train_map

        def train_map(example, seed):
            return (*plain_map(example[:2], seed), example[2])

    buffer = take or CIFAR100_TRAIN_SIZE
    train = train.shuffle(
        buffer, seed=shuffle_seed, reshuffle_each_iteration=True
    )
    train = aug.with_example_seeds(train, shuffle_seed).map(
        train_map, num_parallel_calls=autotune
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


def cifar100_train_arrays(data_dir=None, take=None, download=True):
    """The CIFAR-100 training split as NumPy arrays, in the TFDS order.

    What the keyed pipelines (`keras_unikd.data.keyed`) and a teacher-output
    cache (`keras_unikd.cache`) take: an example's index is its row.

    Args:
        data_dir: TFDS data directory (as in `cifar100_datasets`).
        take: Optional number of examples kept (the first ones).
        download: Whether TFDS may download and prepare the data.

    Returns:
        `(images, labels)`: `uint8` images `(N, 32, 32, 3)` in [0, 255] and
        `int32` labels `(N,)`.

    Raises:
        ValueError: If `take` is not a positive integer.
        RuntimeError: If the dataset is not prepared in `data_dir` and
            cannot be downloaded; the message explains how to prepare it.

    Example:

    ```python
    from keras_unikd.data.keyed import make_keyed_image_pipeline

    images, labels = cifar100_train_arrays(data_dir="~/tfds")
    train_ds = make_keyed_image_pipeline(images, labels, 64, seed=0, epochs=240,
                                         augmentation=cifar100_keyed_augmentation())
    ```
    """
    fn = "cifar100_train_arrays"
    check_positive_int("take", take, fn=fn, allow_none=True)
    ds = aug.load_tfds_split(
        "cifar100", "train", data_dir=data_dir, fn=fn, hint=_HINT, download=download
    )
    if take is not None:
        ds = ds.take(take)
    images, labels = next(ds.batch(CIFAR100_TRAIN_SIZE).as_numpy_iterator())
    return images, labels.astype("int32")
