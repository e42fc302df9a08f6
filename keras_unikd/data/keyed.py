"""Keyed augmentation: every random draw a function of `(seed, epoch, index)`.

The training pipelines of `pipeline.py` and `cifar100.py` draw their
per-example seeds by stream position (`augment.with_example_seeds`) and
shuffle with a stateful buffer, so a view of one example in one epoch
cannot be recomputed without replaying the whole stream. Here every random
choice is a stateless function of the run's `seed`, the `epoch` and the
example's `index` (its row in the training arrays):

- the order of the examples in an epoch is `keyed_epoch_order(seed,
  epoch, n)`, a stateless permutation;
- the seed of a view is `keyed_view_seed(seed, epoch, index, view)`;
  the weak view's flip and padded crop, the strong view's own flip and
  crop, its RandAugment operations and magnitudes and its Cutout are all
  derived from it (`keyed_views` gives any view directly);
- `make_keyed_image_pipeline` yields the training batches built from
  them, optionally with the `(epoch, index)` keys of every example, and
  can start at any epoch.

So a view does not depend on the batch size, on `tf.data`'s parallelism
or on the epochs before it, and a teacher-output cache can be written and
read by `(epoch, index)`. The derivation uses TensorFlow's stateless
random ops, whose values are the same across runs on CPU and GPU but may
change between TensorFlow versions (record the version with a cache).

These pipelines are opt-in: `make_image_pipeline` and `cifar100_datasets`
keep their own (position-keyed) draws.
"""

import dataclasses
import typing

import numpy as np

from keras_unikd.data import augment as aug
from keras_unikd.data.cifar100 import CIFAR100_KEYED_OPTIONS  # noqa: F401 (its old home)
from keras_unikd.data.example_index import indexed
from keras_unikd.validation import check_bool
from keras_unikd.validation import check_int
from keras_unikd.validation import check_normalization
from keras_unikd.validation import check_per_channel
from keras_unikd.validation import check_positive_int
from keras_unikd.validation import is_int

#: The views of an example, in the order of the seeds derived for them.
KEYED_VIEWS = ("weak", "strong")

# The first word of the root seeds of the two independent streams.
_ORDER_STREAM = 0
_VIEW_STREAM = 1
_MAX_SEED = 2**63 - 1

#: The options of a keyed pipeline's views, as loose keyword arguments.
AUGMENTATION_OPTIONS = ("augment", "mean", "std", "crop_padding", "num_ops", "cutout_size")


@dataclasses.dataclass(frozen=True)
class KeyedAugmentation:
    """How a keyed pipeline draws and normalises its views: one frozen object.

    The weak view is a random flip and, with `crop_padding`, a zero-padded
    random crop (with `augment`); the strong view (two-view pipelines) is its
    own weak-style flip and crop, then RandAugment (`num_ops` operations at
    uniform random magnitudes) and Cutout (a square up to `cutout_size`
    pixels, filled with the mean colour). Every view is normalised as
    `(pixels / 255 - mean) / std` (`mean` and `std` both given) or divided by
    255 (neither).

    The checks run at construction; `resolve(image_shape)` fills in what
    depends on the images once (`mean` and `std` per channel, `cutout_size`
    half the shorter side), so that two option sets that draw the same views
    compare equal. A teacher-output cache records the resolved object
    (`to_config`). `keras_unikd.data.cifar100.cifar100_keyed_augmentation()`
    is the standard CIFAR-100 recipe.

    Args:
        augment: Whether to flip (and crop).
        mean: Per-channel mean of images in [0, 1] (a number or one per
            channel), with `std`; or `None` (with `std`).
        std: Per-channel standard deviation matching `mean` (> 0).
        crop_padding: Padding in pixels of the random crop; `None` or 0:
            no crop.
        num_ops: RandAugment operations of the strong view.
        cutout_size: Largest Cutout side of the strong view in pixels;
            `None`: half the shorter image side.

    Example:

    >>> augmentation = KeyedAugmentation(augment=True, mean=0.5, std=0.25)
    >>> resolved = augmentation.resolve((32, 32, 3))
    >>> resolved.mean, resolved.std, resolved.cutout_size
    ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 16)
    >>> KeyedAugmentation(mean=0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: KeyedAugmentation: pass both `mean` and `std` ...
    """

    augment: bool = False
    mean: typing.Any = None
    std: typing.Any = None
    crop_padding: typing.Optional[int] = 0
    num_ops: int = 2
    cutout_size: typing.Optional[int] = None

    def __post_init__(self):
        fn = "KeyedAugmentation"
        check_bool("augment", self.augment, fn=fn)
        check_int("crop_padding", self.crop_padding, fn=fn, allow_none=True)
        check_positive_int("num_ops", self.num_ops, fn=fn)
        check_positive_int("cutout_size", self.cutout_size, fn=fn, allow_none=True)
        check_normalization(self.mean, self.std, fn=fn)
        normal = {
            "crop_padding": int(self.crop_padding or 0),
            "num_ops": int(self.num_ops),
            "mean": _floats(self.mean),
            "std": _floats(self.std),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_options(cls, augmentation=None, options=None, fn="KeyedAugmentation"):
        """`augmentation`, or one made from loose keyword `options` (not both).

        The keyed functions take either a `KeyedAugmentation` or its fields
        as keyword arguments (`augment=True, crop_padding=4, ...`).
        """
        options = dict(options or {})
        unknown = sorted(set(options) - set(AUGMENTATION_OPTIONS))
        if unknown:
            raise TypeError(f"{fn}() got unexpected keyword argument(s) {unknown}.")
        if augmentation is None:
            try:
                return cls(**options)
            except ValueError as error:
                raise ValueError(str(error).replace("KeyedAugmentation:", f"{fn}:", 1)) from None
        if not isinstance(augmentation, cls):
            raise ValueError(
                f"{fn}: `augmentation` must be a keras_unikd.data.KeyedAugmentation; got "
                f"{augmentation!r}. Pass KeyedAugmentation(augment=True, ...)."
            )
        if options:
            raise ValueError(
                f"{fn}: give either `augmentation` or the loose options {sorted(options)}, "
                "not both."
            )
        return augmentation

    def resolve(self, image_shape):
        """The same augmentation with its image-dependent defaults filled in.

        Args:
            image_shape: `(H, W, C)` of the images.

        Returns:
            A `KeyedAugmentation` whose `mean` and `std` have one value per
            channel and whose `cutout_size` is set.
        """
        height, width, channels = (int(d) for d in image_shape)
        per_channel = {
            name: tuple(check_per_channel(name, value, channels, fn="KeyedAugmentation"))
            for name, value in (("mean", self.mean), ("std", self.std))
            if value is not None
        }
        cutout = self.cutout_size or max(1, min(height, width) // 2)
        return dataclasses.replace(self, cutout_size=cutout, **per_channel)

    def to_config(self):
        """The fields as a JSON-ready dict (lists for `mean` and `std`)."""
        config = dataclasses.asdict(self)
        for name in ("mean", "std"):
            if config[name] is not None:
                config[name] = list(config[name])
        return config


def _floats(value):
    if value is None:
        return None
    return tuple(float(v) for v in np.asarray(value, "float64").reshape(-1))


def _check_seed(seed, fn):
    if seed is None:
        raise ValueError(
            f"{fn}: keyed augmentation needs an integer `seed` (e.g. `seed=0`); "
            "every draw is a function of (seed, epoch, example index)."
        )
    return check_int("seed", seed, low=0, high=_MAX_SEED + 1, fn=fn)


def _scalar_key(value, name, fn):
    """A Python int is checked; a tensor is used as given (inside `tf.data`)."""
    import tensorflow as tf

    if tf.is_tensor(value):
        return tf.cast(value, tf.int64)
    return tf.constant(check_int(name, value, fn=fn), tf.int64)


def keyed_example_seed(seed, epoch, index):
    """The stateless seed of one example in one epoch.

    `stateless_fold_in` of the epoch, then of the index, into the root seed
    `[seed, 1]` (the epoch order uses the independent root `[seed, 0]`).
    Every random draw of the example's views in that epoch derives from it
    (see `keyed_view_seed`).

    Args:
        seed: The run's seed, a non-negative Python integer.
        epoch: Non-negative integer (or an integer scalar tensor, e.g.
            inside a `tf.data` map).
        index: The example's row in the training arrays, a non-negative
            integer (or an integer scalar tensor).

    Returns:
        An `int64` tensor shaped `(2,)`.

    Raises:
        ValueError: If `seed` is not a non-negative integer, or a Python
            `epoch` / `index` is negative or not an integer.

    Example:

    >>> a = keyed_example_seed(seed=0, epoch=3, index=7)
    >>> b = keyed_example_seed(seed=0, epoch=3, index=7)
    >>> a.shape, bool((a == b).numpy().all())
    (TensorShape([2]), True)
    """
    import tensorflow as tf

    fn = "keyed_example_seed"
    root = tf.constant([_check_seed(seed, fn), _VIEW_STREAM], tf.int64)
    epoch = _scalar_key(epoch, "epoch", fn)
    index = _scalar_key(index, "index", fn)
    fold = tf.random.experimental.stateless_fold_in
    return fold(fold(root, epoch), index)


def _check_view(view, fn):
    if view not in KEYED_VIEWS:
        raise ValueError(f"{fn}: `view` must be one of {KEYED_VIEWS}; got {view!r}.")
    return KEYED_VIEWS.index(view)


def keyed_view_seed(seed, epoch, index, view="weak"):
    """The stateless seed of one view of one example in one epoch.

    `augment.fold_seed(keyed_example_seed(seed, epoch, index), v)` with
    `v = 0` for `"weak"` and `1` for `"strong"`. The weak view splits it
    into the seeds of its flip and of its padded crop
    (`augment.split_seed(view_seed, 2)`); the strong view splits it into
    the seed of its own weak-style flip and crop and the seed of
    `augment.strong_augment` (RandAugment's operations and magnitudes,
    then Cutout), exactly as `cifar100_weak_view` and
    `cifar100_strong_view` do with the seed they are given.

    Args:
        seed: The run's seed, a non-negative Python integer.
        epoch: Non-negative integer or integer scalar tensor.
        index: The example's row, a non-negative integer or integer scalar
            tensor.
        view: `"weak"` or `"strong"`.

    Returns:
        An `int64` tensor shaped `(2,)`.

    Raises:
        ValueError: On a bad `seed`, `epoch` or `index` (see
            `keyed_example_seed`) or an unknown `view`.

    Example:

    >>> weak = keyed_view_seed(0, epoch=0, index=5, view="weak")
    >>> strong = keyed_view_seed(0, epoch=0, index=5, view="strong")
    >>> bool((weak == strong).numpy().all())
    False
    """
    v = _check_view(view, "keyed_view_seed")
    return aug.fold_seed(keyed_example_seed(seed, epoch, index), v)


def keyed_epoch_order(seed, epoch, num_examples):
    """The order of the examples in one epoch: a stateless permutation.

    `tf.random.experimental.stateless_shuffle` of `range(num_examples)`
    with the seed `stateless_fold_in([seed, 0], epoch)`: the same for the
    same `(seed, epoch)`, different across epochs and seeds, independent
    of the batch size.

    Args:
        seed: The run's seed, a non-negative Python integer.
        epoch: Non-negative integer or integer scalar tensor.
        num_examples: Positive Python integer.

    Returns:
        An `int32` tensor shaped `(num_examples,)`, a permutation of
        `0 .. num_examples - 1`.

    Raises:
        ValueError: If `seed` or `epoch` is not a non-negative integer or
            `num_examples` is not a positive integer.

    Example:

    >>> order = keyed_epoch_order(seed=0, epoch=1, num_examples=6)
    >>> sorted(order.numpy().tolist())
    [0, 1, 2, 3, 4, 5]
    """
    import tensorflow as tf

    fn = "keyed_epoch_order"
    root = tf.constant([_check_seed(seed, fn), _ORDER_STREAM], tf.int64)
    check_positive_int("num_examples", num_examples, fn=fn)
    epoch_seed = tf.random.experimental.stateless_fold_in(root, _scalar_key(epoch, "epoch", fn))
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int32), epoch_seed
    )


def keyed_steps_per_epoch(num_examples, batch_size, drop_remainder=False):
    """Batches per epoch of a keyed pipeline: the `steps_per_epoch` of `fit`.

    Args:
        num_examples: Positive integer, the number of training examples.
        batch_size: Positive integer.
        drop_remainder: Whether the pipeline drops each epoch's last
            incomplete batch.

    Returns:
        A Python integer.

    Raises:
        ValueError: If an argument is not a positive integer, or
            `drop_remainder` leaves no batch.

    Example:

    >>> keyed_steps_per_epoch(10, 4), keyed_steps_per_epoch(10, 4, drop_remainder=True)
    (3, 2)
    """
    fn = "keyed_steps_per_epoch"
    check_positive_int("num_examples", num_examples, fn=fn)
    check_positive_int("batch_size", batch_size, fn=fn)
    if drop_remainder:
        if batch_size > num_examples:
            raise ValueError(
                f"{fn}: with `drop_remainder=True` a batch of {batch_size} leaves no "
                f"batch of {num_examples} examples; use a smaller `batch_size` or "
                "`drop_remainder=False`."
            )
        return num_examples // batch_size
    return -(-num_examples // batch_size)


class _KeyedViews:
    """The views of one training array under one seed and `KeyedAugmentation`."""

    def __init__(self, fn, images, seed, augmentation, two_views):
        self.seed = _check_seed(seed, fn)
        images = np.asarray(images)
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(
                f"{fn}: `images` must be a non-empty array shaped (N, H, W, C) "
                f"(channels last); got shape {images.shape}. Add a channel axis "
                "with `images[..., None]` for grayscale images."
            )
        self.images = images
        self.shape = tuple(int(d) for d in images.shape[1:])
        self.two_views = check_bool("two_views", two_views, fn=fn)
        if two_views and self.shape[-1] not in (1, 3):
            raise ValueError(
                f"{fn}: the strong view (`two_views=True`) needs images with 1 or "
                f"3 channels; got {self.shape[-1]}."
            )
        # Kept in float64, so that the normalisation is `augment.normalize`'s
        # (and, for CIFAR-100, `cifar100_normalize`'s) to the bit.
        self.augmentation = augmentation.resolve(self.shape)
        self.fill = None
        if two_views:
            # Cutout's fill: the mean colour in [0, 255].
            from keras_unikd.data.pipeline import channel_stats

            mean = self.augmentation.mean
            base = mean if mean is not None else channel_stats(images)[0]
            self.fill = 255.0 * np.asarray(base, "float64")

    def weak_view(self, image, view_seed):
        import tensorflow as tf

        image = tf.cast(image, tf.float32)
        if not self.augmentation.augment:
            return image
        flip_seed, crop_seed = aug.split_seed(view_seed, 2)
        image = aug.random_flip(image, flip_seed)
        return aug.pad_and_random_crop(image, self.augmentation.crop_padding, crop_seed)

    def strong_view(self, image, view_seed):
        crop_seed, augment_seed = aug.split_seed(view_seed, 2)
        return aug.strong_augment(
            self.weak_view(image, crop_seed),
            augment_seed,
            fill=self.fill,
            num_ops=self.augmentation.num_ops,
            cutout_size=self.augmentation.cutout_size,
        )

    def views(self, image, epoch, index):
        """The view(s) of `image`, the example `index`, in `epoch`."""
        example_seed = keyed_example_seed(self.seed, epoch, index)
        weak = self.weak_view(image, aug.fold_seed(example_seed, 0))
        if not self.two_views:
            return weak
        return weak, self.strong_view(image, aug.fold_seed(example_seed, 1))

    def normalize(self, views):
        import tensorflow as tf

        channels = self.shape[-1]
        mean, std = self.augmentation.mean, self.augmentation.std
        mean = np.asarray(mean if mean is not None else np.zeros(channels), "float64")
        std = np.asarray(std if std is not None else np.ones(channels), "float64")
        return tf.nest.map_structure(lambda x: aug.normalize(x, mean, std), views)


def _check_parallel(num_parallel_calls, fn):
    import tensorflow as tf

    if num_parallel_calls is None:
        return tf.data.AUTOTUNE
    if num_parallel_calls == tf.data.AUTOTUNE or (
        is_int(num_parallel_calls) and num_parallel_calls >= 1
    ):
        return num_parallel_calls
    raise ValueError(
        f"{fn}: `num_parallel_calls` must be None, `tf.data.AUTOTUNE` or a positive "
        f"integer; got {num_parallel_calls!r}."
    )


def keyed_views(images, seed, epoch, indices, augmentation=None, two_views=False, **options):
    """Recomputes the views of given examples at a given epoch.

    With the same `images`, `seed` and options, the view of `(epoch, i)`
    is exactly the one `make_keyed_image_pipeline` yields for example `i`
    in that epoch, whatever its batch size or parallelism: this is how a
    teacher-output cache can be built for (or checked against) any view.

    Args:
        images: The whole training array shaped `(N, H, W, C)`, pixel
            values in [0, 255] (as given to the pipeline).
        seed: The run's seed, a non-negative Python integer.
        epoch: Non-negative integer, or an integer array with one epoch
            per index.
        indices: Integer array (or sequence) of rows of `images`.
        augmentation: A `KeyedAugmentation` (default: no augmentation,
            pixels divided by 255).
        two_views: Whether to return `(weak, strong)`.
        **options: The fields of a `KeyedAugmentation` as keyword
            arguments (`augment=True, crop_padding=4, ...`), instead of
            `augmentation`.

    Returns:
        A `float32` tensor shaped `(len(indices), H, W, C)`, normalised,
        or a tuple `(weak, strong)` of two such tensors.

    Raises:
        ValueError: On bad options (as `make_keyed_image_pipeline`), an
            empty `indices`, indices outside `[0, N)`, or negative epochs.

    Example:

    >>> import numpy as np
    >>> x = np.arange(4 * 6 * 6, dtype="uint8").reshape(4, 6, 6, 1)
    >>> views = keyed_views(x, seed=0, epoch=2, indices=[3, 1], augment=True)
    >>> alone = keyed_views(x, seed=0, epoch=2, indices=[1], augment=True)
    >>> tuple(views.shape), bool(np.array_equal(views[1], alone[0]))
    ((2, 6, 6, 1), True)
    """
    import tensorflow as tf

    fn = "keyed_views"
    augmentation = KeyedAugmentation.from_options(augmentation, options, fn)
    spec = _KeyedViews(fn, images, seed, augmentation, two_views)
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"{fn}: `indices` must be a non-empty 1-D integer array of example "
            f"rows; got {indices!r}."
        )
    n = len(spec.images)
    if indices.min() < 0 or indices.max() >= n:
        raise ValueError(
            f"{fn}: `indices` must lie in [0, {n}) (the rows of `images`); got "
            f"values from {indices.min()} to {indices.max()}."
        )
    epochs = np.asarray(epoch)
    if not np.issubdtype(epochs.dtype, np.integer) or epochs.ndim > 1 or np.any(epochs < 0):
        raise ValueError(
            f"{fn}: `epoch` must be a non-negative integer or one per index; got {epoch!r}."
        )
    if epochs.ndim == 1 and len(epochs) != len(indices):
        raise ValueError(
            f"{fn}: `epoch` has {len(epochs)} values for {len(indices)} indices; "
            "pass one epoch, or one per index."
        )
    epochs = np.broadcast_to(epochs, indices.shape)
    keys = tf.data.Dataset.from_tensor_slices((epochs.astype("int64"), indices.astype("int32")))
    # Only the requested rows are copied into TensorFlow.
    examples = tf.data.Dataset.zip(keys, tf.data.Dataset.from_tensor_slices(spec.images[indices]))
    views = examples.map(lambda key, image: spec.views(image, *key)).batch(len(indices))
    return spec.normalize(views.get_single_element())


def make_keyed_image_pipeline(
    images,
    labels,
    batch_size,
    seed,
    epochs,
    start_epoch=0,
    augmentation=None,
    *,
    start_batch=0,
    two_views=False,
    drop_remainder=False,
    with_keys=False,
    with_example_index=False,
    num_parallel_calls=None,
    **options,
):
    """A training pipeline whose every random draw is keyed by `(seed, epoch, index)`.

    The keyed counterpart of `make_image_pipeline(..., training=True)`
    with the same options, views and normalisation (`augmentation`, a
    `KeyedAugmentation`, says which): `float32` images and `int32` labels;
    with `two_views` elements are `((weak, strong), labels)`. The draws
    differ from
    `make_image_pipeline`'s (which are keyed by stream position), not
    their distribution.

    Epoch `e`'s examples come in the order `keyed_epoch_order(seed, e, N)`
    and the views of example `i` in epoch `e` are `keyed_views(images,
    seed, e, [i], ...)`: the same for every `batch_size`,
    `num_parallel_calls` and `tf.data.Options.deterministic` (the maps
    always keep their order), and the same whether the run starts at epoch
    0 or resumes at `start_epoch`.

    Epochs and `fit`: the dataset is finite and holds the epochs
    `start_epoch, ..., epochs - 1` one after the other, each
    `keyed_steps_per_epoch(N, batch_size, drop_remainder)` batches long
    (batches never straddle two epochs). Pass that number as `fit`'s
    `steps_per_epoch`: Keras then keeps one iterator over the dataset for
    the whole run, so its epoch `e` reads exactly the batches of keyed
    epoch `e`. Resume with `start_epoch=k` and `fit(..., initial_epoch=k,
    epochs=epochs)`; `start_batch=b` also skips the first `b` batches of
    `start_epoch` (a resume in the middle of an epoch, as
    `keras_unikd.callbacks.StepBackup` does through `Distiller.fit`: the
    dataset is marked `keras_unikd.data.resumable`, so `fit` can make it
    start at any batch). With `compile(steps_per_execution=s)` keep the steps
    per epoch a multiple of `s` (through `batch_size` or `drop_remainder`):
    Keras 3.15 reads whole groups of `s` batches, so its epochs would drift
    into the next keyed epoch. Why not one epoch per iteration: Keras
    iterates a dataset afresh each epoch only without `steps_per_epoch`,
    and the dataset would then have to learn its epoch from a variable
    that a callback advances, making the data depend on mutable state and
    on when Keras iterates; a finite, stateless stream has neither problem.
    (Without `steps_per_epoch` Keras takes this whole dataset as one epoch.)

    With `with_keys=True` elements get a third member, `keys`, a dict of
    `int32` tensors shaped `(batch,)`: `"epoch"` and `"index"` (the rows
    of `images`), e.g. `((weak, strong), labels, keys)`: what a
    teacher-output cache is written and read by. A plain `Model.fit`
    would read a third member as sample weights, so this form is for code
    that unpacks the keys itself (a cache builder, a `train_step` that
    looks the teacher's outputs up).

    With `with_example_index=True` the inputs carry each example's row, as
    terms that keep a memory row per example (CRD) read it:
    `({"inputs": x, "example_index": index}, labels)` (`index` int32
    `(batch,)`, the rows of `images`; see `keras_unikd.data.example_index`),
    which `Distiller.fit` takes as is.

    For CIFAR-100, `make_keyed_image_pipeline(x, y, 64, seed, 240,
    cifar100_keyed_augmentation(), two_views=True)` gives the recipe of
    `cifar100_datasets` keyed: each view is `cifar100_weak_view` /
    `cifar100_strong_view` of its keyed view seed, normalised by
    `cifar100_normalize` (`x`, `y`: the training split as arrays, e.g.
    `tfds.as_numpy(tfds.load("cifar100", split="train",
    as_supervised=True, batch_size=-1))`). A `strong_augment` callable of
    `cifar100_datasets` cannot be keyed (its randomness is its own): such
    runs stay online.

    Args:
        images: Array shaped `(N, H, W, C)` with pixel values in [0, 255]
            (typically `uint8`), kept in memory and gathered by index.
        labels: Integer array shaped `(N,)`.
        batch_size: Positive batch size.
        seed: The run's seed, a non-negative integer (required).
        epochs: Total number of planned epochs (as `fit`'s `epochs`).
        start_epoch: First epoch in the dataset, `0 <= start_epoch <
            epochs` (as `fit`'s `initial_epoch`).
        augmentation: A `KeyedAugmentation` (default: none; pixels
            divided by 255).
        start_batch: Batches of `start_epoch` to skip, `0 <= start_batch <
            steps_per_epoch`.
        two_views: Whether to yield `((weak, strong), labels)`.
        drop_remainder: Whether to drop each epoch's last incomplete batch.
        with_keys: Whether to add the `keys` dict (see above).
        with_example_index: Whether the inputs carry the examples' rows
            (see above).
        num_parallel_calls: Parallelism of the per-example map (None:
            `tf.data.AUTOTUNE`); it never changes the batches.
        **options: The fields of a `KeyedAugmentation` as keyword
            arguments (`augment=True, crop_padding=4, ...`), instead of
            `augmentation`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`,
        `((weak, strong), labels)` or, with `with_keys`, those plus
        `keys`, with a known cardinality of `(epochs - start_epoch) *
        steps_per_epoch`.

    Raises:
        ValueError: On mismatched or badly shaped arrays, a missing or
            negative `seed`, a non-positive `batch_size` or `epochs`, a
            `start_epoch` outside `[0, epochs)`, a `drop_remainder` that
            leaves no batch, negative `crop_padding`, only one of `mean`
            and `std`, a non-positive `std`, non-bool flags, a bad
            `num_parallel_calls`, or `two_views` with images that have
            neither 1 nor 3 channels.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((10, 8, 8, 1), "uint8")
    >>> y = np.arange(10, dtype="int32")
    >>> ds = make_keyed_image_pipeline(
    ...     x, y, batch_size=4, seed=0, epochs=2, augment=True, with_keys=True
    ... )
    >>> [int(keys["epoch"][0]) for _, _, keys in ds]
    [0, 0, 0, 1, 1, 1]
    >>> steps = keyed_steps_per_epoch(len(x), batch_size=4)
    >>> len(ds) == 2 * steps
    True
    """
    import tensorflow as tf

    from keras_unikd.data.pipeline import _check_images_labels
    from keras_unikd.data.resume import resumable

    fn = "make_keyed_image_pipeline"
    images, labels = _check_images_labels(images, labels, fn)
    augmentation = KeyedAugmentation.from_options(augmentation, options, fn)
    spec = _KeyedViews(fn, images, seed, augmentation, two_views)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{fn}: `labels` must be integers (class ids); got dtype {labels.dtype}.")
    check_positive_int("epochs", epochs, fn=fn)
    start_epoch = check_int(
        "start_epoch",
        start_epoch,
        high=epochs,
        fn=fn,
        hint=" `epochs` is the total number of planned epochs (as `fit`'s `epochs`), "
        "not the number left after `start_epoch`.",
    )
    check_bool("drop_remainder", drop_remainder, fn=fn)
    check_bool("with_keys", with_keys, fn=fn)
    check_bool("with_example_index", with_example_index, fn=fn)
    try:
        steps = keyed_steps_per_epoch(len(images), batch_size, drop_remainder)
    except ValueError as err:
        raise ValueError(str(err).replace("keyed_steps_per_epoch", fn)) from None
    start_batch = check_int(
        "start_batch",
        start_batch,
        high=steps,
        fn=fn,
        hint=" It counts the batches of `start_epoch` already trained: fewer than the "
        "epoch's keyed_steps_per_epoch.",
    )
    parallel = _check_parallel(num_parallel_calls, fn)

    num_examples = len(images)
    images_t = tf.constant(images)
    labels_t = tf.constant(labels.astype("int32"))

    def example_fn(epoch, index):
        return spec.views(tf.gather(images_t, index), epoch, index), epoch, index

    def epoch_batches(epoch):
        order = keyed_epoch_order(spec.seed, epoch, num_examples)
        order = order[tf.where(epoch == start_epoch, start_batch * batch_size, 0) :]
        keys = tf.data.Dataset.from_tensor_slices(order).map(lambda i: (epoch, i))
        examples = keys.map(example_fn, num_parallel_calls=parallel, deterministic=True)
        return examples.batch(batch_size, drop_remainder=drop_remainder)

    def finish(views, epoch, index):
        # Normalising whole batches is vectorised and cheaper than per example.
        views = spec.normalize(views)
        if with_example_index:
            views = indexed(views, index)
        element = (views, tf.gather(labels_t, index))
        if with_keys:
            element += ({"epoch": tf.cast(epoch, tf.int32), "index": index},)
        return element

    ds = tf.data.Dataset.range(start_epoch, epochs).flat_map(epoch_batches)
    ds = ds.map(finish, num_parallel_calls=parallel, deterministic=True)
    ds = ds.apply(
        tf.data.experimental.assert_cardinality((epochs - start_epoch) * steps - start_batch)
    )
    options = dict(
        augmentation=augmentation,
        two_views=two_views,
        drop_remainder=drop_remainder,
        with_keys=with_keys,
        with_example_index=with_example_index,
        num_parallel_calls=num_parallel_calls,
    )

    def restart(epoch, batch):
        return make_keyed_image_pipeline(
            images, labels, batch_size, seed, epochs, epoch, start_batch=batch, **options
        )

    return resumable(ds.prefetch(tf.data.AUTOTUNE), restart)
