"""`tf.data` input pipelines for small image classification datasets.

The pipelines yield `(float32 images, int32 labels)` batches, or
`((weak, strong), labels)` for weak/strong-view distillation, and can be
passed to `model.fit()` with any Keras backend (Keras's TensorFlow, JAX and
PyTorch backends all accept `tf.data.Dataset` objects).
"""


import numpy as np

from keras_unikd.data import augment as aug
from keras_unikd.data.example_index import indexed
from keras_unikd.validation import check_bool
from keras_unikd.validation import check_int
from keras_unikd.validation import check_normalization
from keras_unikd.validation import check_per_channel
from keras_unikd.validation import check_positive_int
from keras_unikd.validation import is_int


def _check_images_labels(images, labels, fn):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(
            f"{fn}: `images` must be shaped (N, H, W, C) (channels last); got "
            f"shape {images.shape}. Add a channel axis with `images[..., None]`"
            " for grayscale images."
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{fn}: `labels` must be a 1-D array with one integer label per "
            f"image; got shape {labels.shape} for {len(images)} images."
        )
    return images, labels


def channel_stats(images):
    """Per-channel mean and standard deviation of images scaled to [0, 1].

    Use the result as the `mean` / `std` arguments of
    `make_image_pipeline`. Compute it on the training images only.

    Args:
        images: Array shaped `(N, H, W, C)` with pixel values in [0, 255]
            (typically `uint8`).

    Returns:
        A tuple `(mean, std)` of `float32` arrays shaped `(C,)`.

    Raises:
        ValueError: If `images` is not 4-D or is empty.

    Example:

    >>> import numpy as np
    >>> mean, std = channel_stats(np.full((2, 4, 4, 1), 255, "uint8"))
    >>> float(mean[0]), float(std[0])
    (1.0, 0.0)
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.size == 0:
        raise ValueError(
            "channel_stats: `images` must be a non-empty array shaped "
            f"(N, H, W, C); got shape {images.shape}."
        )
    channels = images.shape[-1]
    mean = np.zeros(channels, dtype="float64")
    sq = np.zeros(channels, dtype="float64")
    count = images.size // channels
    # Accumulate in chunks so uint8 datasets are never copied whole as
    # float64.
    for start in range(0, len(images), 4096):
        chunk = images[start : start + 4096].astype("float64") / 255.0
        mean += chunk.sum(axis=(0, 1, 2))
        sq += np.square(chunk).sum(axis=(0, 1, 2))
    mean /= count
    var = np.maximum(sq / count - np.square(mean), 0.0)
    return mean.astype("float32"), np.sqrt(var).astype("float32")


def make_image_pipeline(
    images,
    labels,
    batch_size,
    training,
    augment=False,
    shuffle_seed=None,
    mean=None,
    std=None,
    drop_remainder=False,
    crop_padding=None,
    two_views=False,
    with_example_index=False,
):
    """Builds a batched, prefetched `tf.data.Dataset` for image classification.

    Each element is `(images, labels)`: `float32` images shaped
    `(batch, H, W, C)`, computed as `(pixels / 255 - mean) / std`, and
    `int32` labels shaped `(batch,)`. When `training` is True the examples
    are shuffled (buffer = whole dataset, reshuffled every epoch). When
    `augment` is True, each training image is randomly flipped left-right
    and, if `crop_padding` is set, zero-padded by `crop_padding` pixels on
    every side and randomly cropped back to its size.

    With `two_views=True` (training pipelines only) each element is
    `((weak, strong), labels)`, both views normalised alike and shaped
    `(batch, H, W, C)`. `weak` is the image as above (for the same
    `shuffle_seed`, the very batches of the single-view pipeline);
    `strong` is the same image with its own draw of that augmentation,
    then `augment.strong_augment`: RandAugment as the MLKD / UniKD authors
    use it (2 operations at uniformly random magnitudes, from 13 for
    single-channel images: their 14 without "color", which does nothing
    to grey pixels) and Cutout of one square of side up to half the
    shorter image side (14 pixels at 28 x 28), filled with the mean colour
    (`mean`, or the mean of `images` when `mean` is None).

    With `with_example_index=True` the inputs carry each example's row in
    `images`, for terms that read it (CRD): `({"inputs": x,
    "example_index": index}, labels)`, `index` int32 `(batch,)` (see
    `keras_unikd.data.example_index`); the batches are otherwise the same.

    Args:
        images: Array shaped `(N, H, W, C)` with pixel values in [0, 255]
            (typically `uint8`).
        labels: Integer array shaped `(N,)`.
        batch_size: Positive batch size.
        training: Whether this is a training pipeline (enables shuffling
            and, with `augment`, augmentation).
        augment: Whether to apply random flips (and crops, see
            `crop_padding`). Ignored when `training` is False.
        shuffle_seed: Optional seed making the shuffle order and the
            augmentation reproducible.
        mean: Per-channel mean (scalar or length-C sequence) of images in
            [0, 1], e.g. from `channel_stats()`. Must be given together with
            `std`. When both are None, images are only divided by 255.
        std: Per-channel standard deviation matching `mean`.
        drop_remainder: Whether to drop the last incomplete batch.
        crop_padding: Padding (pixels) for random-crop augmentation, e.g. 2
            for 28x28 images or 4 for 32x32 images. None disables cropping.
        two_views: Whether to yield `((weak, strong), labels)` (see above).
            Needs `training=True`; evaluation pipelines are single view.
        with_example_index: Whether the inputs carry the examples' rows
            (see above).

    Returns:
        A `tf.data.Dataset` of `(images, labels)` or
        `((weak, strong), labels)` batches.

    Raises:
        ValueError: On mismatched or badly shaped inputs, a non-positive
            `batch_size`, negative `crop_padding`, only one of `mean` and
            `std`, a non-positive `std`, a non-bool `two_views`, or
            `two_views` without `training`, or with images that have
            neither 1 nor 3 channels.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((10, 28, 28, 1), "uint8")
    >>> y = np.arange(10, dtype="int32")
    >>> ds = make_image_pipeline(x, y, batch_size=4, training=False)
    >>> [tuple(b[0].shape) for b in ds]
    [(4, 28, 28, 1), (4, 28, 28, 1), (2, 28, 28, 1)]
    """
    import tensorflow as tf

    images, labels = _check_images_labels(images, labels, "make_image_pipeline")
    fn = "make_image_pipeline"
    check_positive_int("batch_size", batch_size, fn=fn)
    check_int("crop_padding", crop_padding, fn=fn, allow_none=True)
    check_normalization(mean, std, fn=fn)
    check_bool("two_views", two_views, fn=fn)
    check_bool("with_example_index", with_example_index, fn=fn)
    if two_views and not training:
        raise ValueError(
            "make_image_pipeline: `two_views=True` needs `training=True`; "
            "evaluation pipelines are single view (build the validation "
            "pipeline without `two_views`)."
        )
    height, width, channels = images.shape[1:]
    if two_views and channels not in (1, 3):
        raise ValueError(
            "make_image_pipeline: the strong view (`two_views=True`) needs "
            f"images with 1 or 3 channels; got {channels}."
        )
    if mean is not None:
        mean = np.asarray(check_per_channel("mean", mean, channels, fn=fn), "float32")
        std = np.asarray(check_per_channel("std", std, channels, fn=fn), "float32")
        scale = (1.0 / (255.0 * std)).astype("float32")
        shift = (-mean / std).astype("float32")
    else:
        scale = np.full(channels, 1.0 / 255.0, dtype="float32")
        shift = np.zeros(channels, dtype="float32")
    scale_t = tf.constant(scale)
    shift_t = tf.constant(shift)

    # With indices, each element carries its row after the label: (image,
    # label, index) until the final map.
    rows = (np.arange(len(images), dtype="int32"),) if with_example_index else ()
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype("int32"), *rows))
    if training:
        ds = ds.shuffle(
            buffer_size=max(len(images), 1),
            seed=shuffle_seed,
            reshuffle_each_iteration=True,
        )

    if two_views:
        # Cutout's fill: the mean colour, in [0, 255].
        fill = 255.0 * (mean if mean is not None else channel_stats(images)[0])

    if training and (augment or two_views):
        pad = int(crop_padding or 0)

        def weak_view(image, seed):
            image = tf.cast(image, tf.float32)
            if not augment:
                return image
            flip_seed = tf.stack([seed[0], seed[1]])
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            if pad > 0:
                image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
                crop_seed = tf.stack([seed[1], seed[0] + 1])
                image = tf.image.stateless_random_crop(
                    image, size=[height, width, channels], seed=crop_seed
                )
            return image

        def augment_fn(example, seed):
            image, label, *row = example
            weak = weak_view(image, seed)
            if not two_views:
                return (weak, label, *row)
            strong = weak_view(image, aug.fold_seed(seed, 1))
            strong = aug.strong_augment(strong, aug.fold_seed(seed, 2), fill=fill)
            return ((weak, strong), label, *row)

        # Per-example stateless seeds keep the parallel map reproducible
        # for a given `shuffle_seed` while still changing every epoch.
        seeds = tf.data.Dataset.random(
            seed=shuffle_seed, rerandomize_each_iteration=True
        ).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            augment_fn, num_parallel_calls=tf.data.AUTOTUNE
        )

    def normalize(image, label, *row):
        image = tf.nest.map_structure(
            lambda x: tf.cast(x, tf.float32) * scale_t + shift_t, image
        )
        return (indexed(image, row[0]) if row else image), label

    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    # Normalizing whole batches is vectorized and much cheaper than per
    # example.
    ds = ds.map(normalize, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def take_subset(x, y, n, seed=0):
    """Draws a class-balanced random subset of `n` examples.

    Every class gets `n // num_classes` examples, the remainder going to
    randomly chosen classes; if a class has too few examples, the shortfall
    is filled from the other classes. The result is deterministic for a
    given `seed` and keeps the original order of the examples.

    Args:
        x: Array of examples, first axis indexing them.
        y: 1-D integer labels matching `x`.
        n: Subset size, between 1 and `len(x)`.
        seed: Seed of the random draw.

    Returns:
        A tuple `(x_subset, y_subset)` (copies).

    Raises:
        ValueError: If `x` and `y` don't match or `n` is out of range.

    Example:

    >>> import numpy as np
    >>> x = np.arange(100)[:, None]
    >>> y = np.arange(100) % 4
    >>> xs, ys = take_subset(x, y, 20, seed=0)
    >>> np.bincount(ys).tolist()
    [5, 5, 5, 5]
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"take_subset: `y` must be 1-D with one label per example of "
            f"`x`; got x shape {x.shape} and y shape {y.shape}."
        )
    if not is_int(n) or not 1 <= n <= len(x):
        raise ValueError(
            f"take_subset: `n` must be an integer between 1 and {len(x)} "
            f"(the number of examples); got {n!r}."
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    quota = np.full(len(classes), n // len(classes))
    quota[rng.permutation(len(classes))[: n % len(classes)]] += 1

    chosen, leftover = [], []
    for cls, q in zip(classes, quota):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        chosen.append(idx[:q])
        leftover.append(idx[q:])
    chosen = np.concatenate(chosen)
    short = n - len(chosen)
    if short > 0:
        leftover = np.concatenate(leftover)
        chosen = np.concatenate(
            [chosen, rng.choice(leftover, size=short, replace=False)]
        )
    chosen = np.sort(chosen)
    return x[chosen], y[chosen]
