"""An opened teacher cache: checked against its training, read by `(epoch, index)`."""

import os
import warnings

import numpy as np

from keras_unikd.cache import manifest as mf
from keras_unikd.cache import shards
from keras_unikd.data.keyed import KeyedAugmentation
from keras_unikd.validation import check_positive_int


def check_file(path, shape, dtype, epoch, fn):
    """`ValueError` unless `path` is a complete `.npy` of `shape` and `dtype`."""
    fix = (
        "Run build_teacher_cache again with the same arguments: it keeps the intact "
        f"epochs and computes epoch {epoch} again."
    )
    if not os.path.isfile(path):
        raise ValueError(f"{fn}: the teacher cache file {path!r} is missing. {fix}")
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            header = (
                np.lib.format.read_array_header_1_0(file)
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0(file)
            )
            offset = file.tell()
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{fn}: the teacher cache file {path!r} is not a readable .npy file ({error}). {fix}"
        ) from None
    file_shape, _, file_dtype = header
    if tuple(file_shape) != tuple(shape) or np.dtype(file_dtype) != np.dtype(dtype):
        raise ValueError(
            f"{fn}: the teacher cache file {path!r} holds a {file_dtype} array of shape "
            f"{file_shape}, but the manifest says {dtype} {tuple(shape)}. {fix}"
        )
    expected = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = os.path.getsize(path)
    if size != expected:
        raise ValueError(
            f"{fn}: the teacher cache file {path!r} is truncated or damaged: {size} bytes "
            f"instead of {expected}. {fix}"
        )


def check_epoch_files(directory, manifest, epoch, fn):
    """`check_file` for every array of one epoch."""
    rows = manifest["dataset"]["num_examples"]
    for spec in mf.specs_of(manifest):
        check_file(
            mf.array_path(directory, epoch, spec), (rows, spec.width), manifest["dtype"], epoch, fn
        )


def open_teacher_cache(
    directory,
    teacher,
    terms,
    images,
    labels,
    seed,
    epochs,
    augmentation=None,
    *,
    two_views=False,
    teacher_token_layouts=None,
    **options,
):
    """Opens a teacher cache for a training, checking that it is that training's.

    Every check a reuse needs is made here, each failure a `ValueError`
    naming the problem and its fix: the teacher's weights (its
    fingerprint), the data, the augmentation and the seed must be those the
    cache was built with; the cache must hold every view and output the
    `terms` read; epochs `0 .. epochs - 1` must be complete (for a cache
    built in shards, in the manifest or in a shard's progress file: the
    error names the shards still to run); and each of their files must be
    a whole `.npy` array of the manifest's shape and dtype. A cache built
    under another TensorFlow version warns (its keyed views may differ);
    one built under another Keras backend is fine.

    Args:
        directory: The cache's directory.
        teacher: The teacher (`keras.Model`), its `teacher_fingerprint`, or
            `None` to train without the teacher model: the cache's teacher
            is then taken on trust (everything else is checked).
        terms: The training's `DistillationTerm`s (or their `TeacherNeeds`).
        images: The training images the cache was built from.
        labels: Their labels.
        seed: The keyed pipeline's seed.
        epochs: The epochs the training runs (`fit`'s `epochs`).
        augmentation: The training's `keras_unikd.data.KeyedAugmentation`
            (or its fields as keyword arguments in `**options`).
        two_views: Whether the training batches hold `(weak, strong)` views.
        teacher_token_layouts: As at build time (checked with a teacher
            model).
        **options: The fields of a `KeyedAugmentation`, instead of
            `augmentation`.

    Returns:
        A `TeacherCache`.

    Raises:
        ValueError: As above, or if the terms cannot be cached.

    Example:

    >>> import keras, numpy as np, tempfile
    >>> from keras_unikd import terms
    >>> from keras_unikd.cache import build_teacher_cache
    >>> teacher = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                             keras.layers.Dense(3)])
    >>> x = np.zeros((3, 4, 4, 1), "uint8")
    >>> y = np.array([0, 1, 2])
    >>> directory = tempfile.mkdtemp()
    >>> _ = build_teacher_cache(directory, teacher, [terms.KD()], x, y, seed=0, epochs=1,
    ...                         verbose=0)
    >>> cache = open_teacher_cache(directory, teacher, [terms.KD()], x, y, seed=0, epochs=1)
    >>> cache.lookup(0, [2])["weak"]["logits"].shape
    (1, 3)
    >>> open_teacher_cache(directory, teacher, [terms.KD()], x, y, seed=0, epochs=2)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: open_teacher_cache: the teacher cache at ... holds epochs 0 .. 0 complete, ...
    """
    fn = "open_teacher_cache"
    needs = mf.cache_needs(terms, fn)
    views = mf.cache_views(two_views, needs, fn)
    check_positive_int("epochs", epochs, fn=fn)
    augmentation = KeyedAugmentation.from_options(augmentation, options, fn)
    images, labels = mf.training_arrays(images, labels, fn)
    manifest, records = shards.read_progress(directory, fn)
    if teacher is None or isinstance(teacher, str):
        teacher_hash, layouts = teacher, None
    else:
        from keras_unikd.teacher_source import TeacherOutputs

        teacher_hash = mf.teacher_fingerprint(teacher)
        layouts = TeacherOutputs(teacher, needs, teacher_token_layouts).token_layouts
    expected = mf.identity(
        teacher_hash, images, labels, seed, augmentation.resolve(images.shape[1:]).to_config()
    )
    mf.check_identity(manifest, expected, directory, fn)
    _check_outputs(manifest, views, needs, directory, fn)
    cached_layouts = manifest["teacher"]["token_layouts"]
    if layouts is not None and any(
        cached_layouts.get(path) != layouts.get(path) for path in needs.pooled_features
    ):
        raise ValueError(
            f"{fn}: the teacher cache at {directory!r} read the teacher's token features "
            f"with the layouts {cached_layouts}, this training with {layouts}. Build a "
            "cache with this training's teacher_token_layouts."
        )
    manifest["epochs_complete"] = _check_epochs(manifest, records, epochs, directory, fn)
    warn_if_other_tensorflow(manifest, directory)
    for epoch in range(int(epochs)):
        check_epoch_files(directory, manifest, epoch, fn)
    return TeacherCache(directory, manifest, int(epochs))


def _check_outputs(manifest, views, needs, directory, fn):
    """`ValueError` unless the cache holds every view and output needed."""
    missing = [f"the {view} view" for view in views if view not in manifest["views"]]
    held = manifest["outputs"]
    if needs.logits and not held["logits"]:
        missing.append("the teacher's logits")
    missing.extend(
        f"the pooled teacher feature {path!r}"
        for path in needs.pooled_features
        if path not in held["pooled_features"]
    )
    if missing:
        raise ValueError(
            f"{fn}: the teacher cache at {directory!r} lacks {', '.join(missing)} "
            f"(it holds views {manifest['views']}, logits: {held['logits']}, "
            f"pooled features {held['pooled_features']}). Build a cache "
            "for these terms and views in a new directory."
        )


def _check_epochs(manifest, records, epochs, directory, fn):
    """The complete epochs (the manifest's and the shard files'), or a
    `ValueError` naming the missing ones and how to build them."""
    complete = shards.complete_epochs(manifest, records)
    missing = [epoch for epoch in range(int(epochs)) if epoch not in complete]
    if not missing:
        return sorted(complete)
    pending = shards.unfinished(records, complete)
    if pending and set(missing) <= {e for epochs in pending.values() for e in epochs}:
        raise ValueError(
            f"{fn}: the teacher cache at {directory!r} is built in shards, and "
            f"these have not finished: {shards.describe(pending)} (the training "
            f"asks for epochs 0 .. {epochs - 1}). {shards.finish_hint(pending)}"
        )
    held = mf.leading_epochs(complete)
    raise ValueError(
        f"{fn}: the teacher cache at {directory!r} holds epochs 0 .. {held - 1} "
        f"complete, but the training asks for {epochs} (epoch {missing[0]} is "
        f"missing). Run build_teacher_cache(..., epochs={epochs}) with the same "
        "arguments (for a cache built in shards, every shard with epochs="
        f"{epochs}): it keeps the finished epochs and computes the rest."
    )


def warn_if_other_tensorflow(manifest, directory):
    tf_version = mf.versions()["tensorflow"]
    if manifest["versions"]["tensorflow"] != tf_version:
        warnings.warn(
            f"The teacher cache at {directory!r} was built with TensorFlow "
            f"{manifest['versions']['tensorflow']}, this process runs {tf_version}: "
            "the keyed augmentation's stateless random ops may draw other views. "
            "Rebuild the cache if exactness matters.",
            stacklevel=3,
        )


class TeacherCache:
    """An opened teacher cache: the teacher's outputs by `(epoch, index)`.

    Made by `build_teacher_cache` or `open_teacher_cache` (which check it);
    not constructed directly.

    Attributes:
        directory: The cache's directory.
        manifest: The manifest, a dict (see `keras_unikd.cache.manifest`).
        epochs: The epochs it was opened for; `lookup` reads epochs below.
        views: `("weak",)` or `("weak", "strong")`.
        logits: Whether it holds the teacher's logits.
        pooled_features: The teacher layer paths whose pooled features it
            holds.
        arrays: The `ArraySpec`s of the stored arrays.
        num_examples: The number of training examples.
        dtype: The stored dtype, `"float32"` or `"float16"`.
        augmentation: The `keras_unikd.data.KeyedAugmentation` of its views.
    """

    def __init__(self, directory, manifest, epochs):
        self.directory = directory
        self.manifest = manifest
        self.epochs = epochs
        self.views = tuple(manifest["views"])
        self.logits = manifest["outputs"]["logits"]
        self.pooled_features = tuple(manifest["outputs"]["pooled_features"])
        self.arrays = mf.specs_of(manifest)
        self.num_examples = manifest["dataset"]["num_examples"]
        self.dtype = manifest["dtype"]
        self.augmentation = KeyedAugmentation(**manifest["augmentation"])
        self._arrays = {}

    def teacher_source(self):
        """A `keras_unikd.teacher_source.CachedTeacher` of this cache's teacher.

        Pass it to a `Distiller` in place of the teacher model: the
        Distiller is built from what the manifest records (the class count,
        the tapped features' shapes) and reads the teacher's outputs from
        `cached_teacher_pipeline`'s batches.
        """
        from keras_unikd.teacher_source import CachedTeacher

        teacher = self.manifest["teacher"]
        return CachedTeacher(
            teacher["num_classes"],
            teacher["feature_shapes"],
            input_shapes=[self.manifest["dataset"]["image_shape"]],
            token_layouts=teacher["token_layouts"],
        )

    def disk_bytes(self):
        """The size of the cache on disk: every file of its directory, in bytes."""
        return sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(self.directory)
            for name in names
        )

    def __repr__(self):
        return (
            f"TeacherCache({self.directory!r}, epochs={self.epochs}, views={self.views}, "
            f"logits={self.logits}, pooled_features={self.pooled_features}, "
            f"dtype={self.dtype!r})"
        )

    def _array(self, epoch, spec):
        key = (epoch, spec.file)
        if key not in self._arrays:
            path = mf.array_path(self.directory, epoch, spec)
            self._arrays[key] = np.load(path, mmap_mode="r")
        return self._arrays[key]

    def lookup(self, epochs, indices, dtype="float32"):
        """The cached teacher outputs of a batch of `(epoch, index)` keys.

        Args:
            epochs: One epoch for the whole batch, or one per index (the
                `"epoch"` of a keyed pipeline's keys).
            indices: The examples' rows in the training arrays (the
                `"index"` of the keys).
            dtype: The dtype of the returned arrays (`None`: as stored).

        Returns:
            `{view: {"logits": (batch, num_classes), "features": {layer path:
            (batch, channels)}}}` of NumPy arrays, for each view of `views`
            (`"logits"` only when the cache holds them).

        Raises:
            ValueError: For indices outside `[0, num_examples)`, epochs
                outside `[0, epochs)`, or mismatched lengths.
        """
        indices, epochs = self._keys(epochs, indices)
        unique = np.unique(epochs)

        def gather(spec):
            if len(unique) == 1:
                rows = self._array(int(unique[0]), spec)[indices]
            else:
                rows = np.empty((len(indices), spec.width), self.dtype)
                for epoch in unique:
                    mask = epochs == epoch
                    rows[mask] = self._array(int(epoch), spec)[indices[mask]]
            return np.asarray(rows) if dtype is None else np.asarray(rows, dtype)

        outputs = {view: {"features": {}} for view in self.views}
        for spec in self.arrays:
            if spec.output == mf.LOGITS:
                outputs[spec.view]["logits"] = gather(spec)
            else:
                outputs[spec.view]["features"][spec.path] = gather(spec)
        return outputs

    def _keys(self, epochs, indices):
        indices = np.asarray(indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                f"TeacherCache.lookup: `indices` must be a 1-D integer array; got {indices!r}."
            )
        epochs = np.asarray(epochs)
        if not np.issubdtype(epochs.dtype, np.integer) or epochs.ndim > 1:
            raise ValueError(
                f"TeacherCache.lookup: `epochs` must be an integer or one per index; "
                f"got {epochs!r}."
            )
        if epochs.ndim == 1 and epochs.shape != indices.shape:
            raise ValueError(
                f"TeacherCache.lookup: {len(epochs)} epochs for {len(indices)} indices."
            )
        epochs = np.broadcast_to(epochs, indices.shape)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_examples):
            raise ValueError(
                f"TeacherCache.lookup: indices must lie in [0, {self.num_examples}); got "
                f"{indices.min()} .. {indices.max()}."
            )
        if epochs.size and (epochs.min() < 0 or epochs.max() >= self.epochs):
            raise ValueError(
                f"TeacherCache.lookup: epochs must lie in [0, {self.epochs}) (the epochs "
                f"the cache was opened for); got {epochs.min()} .. {epochs.max()}."
            )
        return indices, epochs
