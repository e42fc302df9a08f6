"""Building a teacher cache: the teacher's outputs on every keyed view, written once."""

import itertools
import os
import time
import warnings

import keras
import numpy as np
from keras import ops

from keras_unikd.cache import manifest as mf
from keras_unikd.cache import shards
from keras_unikd.cache.store import TeacherCache
from keras_unikd.cache.store import check_epoch_files
from keras_unikd.cache.store import warn_if_other_tensorflow
from keras_unikd.data.keyed import KeyedAugmentation
from keras_unikd.validation import check_choice
from keras_unikd.validation import check_int
from keras_unikd.validation import check_positive_int


def build_teacher_cache(
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
    batch_size=256,
    dtype="float32",
    teacher_token_layouts=None,
    shard=None,
    verbose=1,
    **options,
):
    """Writes the teacher's outputs for every keyed view of `epochs` epochs.

    For every epoch `e < epochs`, example index `i` and view (`"weak"`, and
    `"strong"` with `two_views`), the cache holds what the `terms` read of
    the teacher (`DistillationTerm.teacher_needs`): the logits, and the
    tapped features that a term only pools, pooled
    (`keras_unikd.layers.pooling.global_pool`), computed by the same
    `keras_unikd.teacher_source.TeacherOutputs` that an online Distiller
    runs. The views are those of `make_keyed_image_pipeline(images, labels,
    ..., seed=seed, augmentation=augmentation, with_keys=True)`, i.e.
    `keyed_views(images, seed, e, [i], augmentation)`; the teacher runs in
    inference mode on `batch_size` examples (both views of them in one
    pass).

    The build resumes: the epochs the manifest records complete are kept
    (unless a file of theirs is missing or truncated: such an epoch is
    computed again, with a warning), the others computed, so an interrupted
    build continues where it stopped and a larger `epochs` extends a cache.
    A directory holding a cache of another teacher, data, augmentation,
    seed, views, outputs or dtype is a `ValueError`, never overwritten.

    With `shard=(i, N)`, this process computes the epochs `e` with `e % N
    == i` alone, and N such processes (on one machine, one per device, or
    on several machines sharing the directory) build one cache together,
    each recording its progress in its own `shard-<i>-of-<N>.json`; rerun
    a shard with the same arguments to resume it. Sharding is by epoch so
    that every file is written by one process, from the same batches as in
    a one-process build: with the same `batch_size`, the files are byte
    for byte those of a one-process build, and the shard that finds every
    shard finished writes the manifest a one-process build writes (but for
    its `build_seconds`, `batch_size` and `versions`, which are those of
    the shards) and deletes the shard files (see
    `keras_unikd.cache.shards`). Until then `open_teacher_cache` reads the
    epochs of every shard file and names the shards still to run.

    Args:
        directory: The cache's directory (created if missing).
        teacher: The trained teacher, a functional or Sequential
            `keras.Model` with one input (images) whose one output is the
            logits (or a softmax).
        terms: The `DistillationTerm`s of the training (or their combined
            `TeacherNeeds`); terms that read nothing of the teacher
            (`CrossEntropy`) may be included.
        images: The training images `(N, H, W, C)` in [0, 255], as given
            to the keyed pipeline.
        labels: The training labels `(N,)` (hashed into the manifest).
        seed: The keyed pipeline's seed.
        epochs: The number of epochs to cache (`0 .. epochs - 1`).
        augmentation: The keyed pipeline's `KeyedAugmentation` (e.g.
            `cifar100_keyed_augmentation()`), or its fields as keyword
            arguments in `**options`.
        two_views: Whether the training batches are `((weak, strong),
            labels)`.
        batch_size: The teacher's batch size (does not change the views).
        dtype: `"float32"` or `"float16"` (half the size; values beyond
            float16's range are an error).
        teacher_token_layouts: As the `Distiller`'s, for token features.
        shard: `None` (one process builds every epoch), or `(index,
            num_shards)` with `0 <= index < num_shards`: this process
            builds the epochs `index, index + num_shards, ...`.
        verbose: 0 (silent) or 1 (a line and a progress bar per epoch).
        **options: The fields of a `KeyedAugmentation`, instead of
            `augmentation`.

    Returns:
        The built `TeacherCache`, opened for `epochs` epochs; with `shard`,
        `None` while other shards are unfinished
        (`keras_unikd.cache.shards.shard_status` lists them).

    Raises:
        ValueError: If the terms cannot be cached (their `teacher_needs()`
            says why) or read nothing of the teacher, the terms need two
            views without `two_views`, an option or `shard` is bad, the
            directory holds another cache, or shards of another count are
            unfinished there.

    Example:

    >>> import keras, numpy as np, tempfile
    >>> from keras_unikd import terms
    >>> teacher = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                             keras.layers.Dense(3)])
    >>> x = np.arange(5 * 16, dtype="uint8").reshape(5, 4, 4, 1)
    >>> y = np.array([0, 1, 2, 0, 1])
    >>> directory = tempfile.mkdtemp()
    >>> cache = build_teacher_cache(directory, teacher, [terms.KD()], x, y, seed=0,
    ...                             epochs=2, augment=True, verbose=0)
    >>> out = cache.lookup(epochs=[1, 1], indices=[4, 0])
    >>> out["weak"]["logits"].shape, cache.epochs
    ((2, 3), 2)
    """
    fn = "build_teacher_cache"
    needs = mf.cache_needs(terms, fn)
    views = mf.cache_views(two_views, needs, fn)
    check_choice("dtype", dtype, mf.DTYPES, fn=fn)
    epochs = check_positive_int("epochs", epochs, fn=fn)
    batch_size = check_positive_int("batch_size", batch_size, fn=fn)
    check_choice("verbose", verbose, (0, 1, 2), fn=fn)
    shard = shards.check_shard(shard, fn)
    augmentation = KeyedAugmentation.from_options(augmentation, options, fn)
    images, labels = mf.training_arrays(images, labels, fn)
    seed = check_int("seed", seed, fn=fn)
    outputs = _outputs_model(teacher, needs, images.shape[1:], teacher_token_layouts, fn)
    fingerprint = mf.teacher_fingerprint(teacher)
    resolved = augmentation.resolve(images.shape[1:]).to_config()
    expected = mf.identity(fingerprint, images, labels, seed, resolved)
    expected.update(_holdings(teacher, fingerprint, outputs, needs, views), dtype=dtype)
    manifest = _start(directory, expected, epochs, batch_size, shard, fn)
    progress = _Progress(directory, manifest, shard, epochs, batch_size, fn)
    todo = _todo(directory, progress, shards.shard_epochs(shard, epochs))
    writer = _EpochWriter(directory, outputs, manifest, batch_size, verbose)
    where = "" if shard is None else f" (shard {shard[0]} of {shard[1]})"
    for run in _consecutive(todo):
        start = time.perf_counter()  # an epoch's time includes the pipeline's setup
        batches = _keyed_batches(images, labels, seed, augmentation, views, batch_size, run)
        for epoch, epoch_batches in itertools.groupby(batches, key=lambda batch: batch[0]):
            if verbose:
                print(f"Teacher cache {directory}{where}: epoch {epoch + 1}/{epochs}")
            writer.write(epoch, epoch_batches)
            progress.done(epoch, round(time.perf_counter() - start, 3))
            start = time.perf_counter()
    manifest = progress.finish()
    return None if manifest is None else TeacherCache(directory, manifest, epochs)


def _outputs_model(teacher, needs, image_shape, token_layouts, fn):
    """A functional model of `TeacherOutputs` on one view of images, in float32."""
    from keras_unikd.teacher_source import TeacherOutputs

    if not isinstance(teacher, keras.Model):
        raise ValueError(f"{fn}: `teacher` must be a keras.Model; got {type(teacher).__name__}.")
    if len(teacher.inputs) != 1:
        raise ValueError(
            f"{fn}: the teacher has {len(teacher.inputs)} inputs; a teacher cache "
            "is built over image pipelines, for single-input teachers."
        )
    teacher_shape = tuple(teacher.inputs[0].shape[1:])
    if len(teacher_shape) != len(image_shape) or any(
        t is not None and t != d for t, d in zip(teacher_shape, image_shape)
    ):
        raise ValueError(
            f"{fn}: the teacher's input shape {teacher_shape} does not match the "
            f"images' {tuple(image_shape)}."
        )
    outputs = TeacherOutputs(teacher, needs, token_layouts)
    inputs = keras.Input(shape=tuple(image_shape), name="cached_view")
    values = keras.tree.map_structure(lambda x: ops.cast(x, "float32"), outputs(inputs))
    for path, feature in values["features"].items():
        if len(feature.shape) != 2:
            raise ValueError(
                f"{fn}: teacher layer {path!r} pools to shape {tuple(feature.shape)}; "
                "a cached pooled feature must be a (batch, C) vector."
            )
    outputs.model = keras.Model(inputs, values, name=f"{teacher.name}_cache_outputs")
    return outputs


def _holdings(teacher, fingerprint, outputs, needs, views):
    """The manifest fields that say what the cache holds, and of which teacher."""
    specs = mf.array_specs(views, needs, outputs.num_classes, outputs.feature_shapes)
    return {
        "teacher": {
            "weights_sha256": fingerprint,
            "name": teacher.name,
            "num_classes": int(outputs.num_classes),
            "token_layouts": outputs.token_layouts,
            "feature_shapes": {
                path: list(shape) for path, shape in outputs.feature_shapes.items()
            },
        },
        "views": list(views),
        "outputs": {"logits": needs.logits, "pooled_features": list(needs.pooled_features)},
        "arrays": [spec.to_config() for spec in specs],
    }


def _start(directory, expected, epochs, batch_size, shard, fn):
    """The manifest to build with: a new one, or the directory's, checked.

    A shard never rewrites an existing manifest (other shards may be
    merging into it); its batch size and versions go to its own file.
    """
    os.makedirs(directory, exist_ok=True)
    if not os.path.exists(os.path.join(directory, mf.MANIFEST)):
        manifest = dict(expected, epochs=epochs, epochs_complete=[], build_seconds={})
    else:
        manifest = mf.read_manifest(directory, fn)
        _check_holdings(manifest, expected, directory, fn)
        if shard is not None:
            warn_if_other_tensorflow(manifest, directory)
            return manifest
        # Finished shards of an earlier build are merged first.
        shards.refuse_unfinished(directory, None, fn)
        manifest = shards.merge(directory, fn) or manifest
        manifest["epochs"] = max(int(manifest["epochs"]), epochs)
    manifest["versions"] = mf.versions()
    manifest["batch_size"] = batch_size
    mf.write_manifest(directory, manifest)
    return manifest


def _check_holdings(manifest, expected, directory, fn):
    """`ValueError` unless the directory's cache is the one `expected` describes."""
    mf.check_identity(manifest, expected, directory, fn)
    for key in ("views", "outputs", "dtype", "arrays"):
        if manifest.get(key) != expected[key]:
            raise ValueError(
                f"{fn}: the teacher cache at {directory!r} holds other {key} "
                f"(cache {mf.short(manifest.get(key))}, now {mf.short(expected[key])}). "
                "Build this cache in a new directory (or delete this one)."
            )
    if manifest["teacher"]["token_layouts"] != expected["teacher"]["token_layouts"]:
        raise ValueError(
            f"{fn}: the teacher cache at {directory!r} read the teacher's token "
            f"features with other layouts ({manifest['teacher']['token_layouts']} "
            f"vs {expected['teacher']['token_layouts']}). Build this cache in a new "
            "directory."
        )


class _Progress:
    """Where a build records the epochs it finishes: the manifest, or its shard's file."""

    def __init__(self, directory, manifest, shard, epochs, batch_size, fn):
        self.directory, self.fn, self.manifest = directory, fn, manifest
        self.record = None
        if shard is not None:
            self.record = shards.start(directory, manifest, shard, epochs, batch_size, fn)
        _, records = shards.read_progress(directory, fn)
        self.complete = shards.complete_epochs(manifest, records)
        self.own = set(self._target["epochs_complete"])

    @property
    def _target(self):
        return self.manifest if self.record is None else self.record

    def discard(self, epoch):
        """Forgets a complete epoch whose files are damaged."""
        self.complete.discard(epoch)
        self.own.discard(epoch)

    def done(self, epoch, seconds):
        """Records `epoch` complete, atomically."""
        self.complete.add(epoch)
        self.own.add(epoch)
        self._target["epochs_complete"] = sorted(self.own)
        self._target["build_seconds"][str(epoch)] = seconds
        if self.record is None:
            mf.write_manifest(self.directory, self.manifest)
        else:
            shards.write_record(self.directory, self.record)

    def finish(self):
        """The finished cache's manifest, or `None` while other shards are unfinished."""
        return self.manifest if self.record is None else shards.merge(self.directory, self.fn)


def _todo(directory, progress, epochs):
    """The epochs of `epochs` to compute: those not complete, or whose files are
    damaged (with a warning)."""
    todo = []
    for epoch in epochs:
        if epoch in progress.complete:
            try:
                check_epoch_files(directory, progress.manifest, epoch, "build_teacher_cache")
                continue
            except ValueError as error:
                warnings.warn(f"{error} Epoch {epoch} is computed again.", stacklevel=3)
                progress.discard(epoch)
        todo.append(epoch)
    return todo


def _consecutive(epochs):
    """`epochs` (sorted) as runs of consecutive epochs: one keyed pipeline each."""
    runs = []
    for epoch in epochs:
        if runs and epoch == runs[-1][-1] + 1:
            runs[-1].append(epoch)
        else:
            runs.append([epoch])
    return runs


def _keyed_batches(images, labels, seed, augmentation, views, batch_size, run):
    """`(epoch, index, teacher input)` of each batch of the epochs of `run`.

    One keyed pipeline for the run of epochs (its graph is traced once);
    both views of a batch are concatenated into one teacher input.
    """
    from keras_unikd.data.keyed import make_keyed_image_pipeline

    dataset = make_keyed_image_pipeline(
        images,
        labels,
        batch_size,
        seed,
        epochs=run[-1] + 1,
        start_epoch=run[0],
        augmentation=augmentation,
        two_views=len(views) == 2,
        with_keys=True,
    )
    for x, _, keys in dataset.as_numpy_iterator():
        # Batches never straddle two epochs.
        batch = np.concatenate(x, axis=0) if len(views) == 2 else x
        yield int(keys["epoch"][0]), keys["index"], batch


class _EpochWriter:
    """Runs the teacher on one epoch's batches and writes the epoch's arrays."""

    def __init__(self, directory, outputs, manifest, batch_size, verbose):
        from keras_unikd.data.keyed import keyed_steps_per_epoch

        self.directory = directory
        self.model = outputs.model
        self.specs = mf.specs_of(manifest)
        self.views = manifest["views"]
        self.rows = manifest["dataset"]["num_examples"]
        self.dtype = manifest["dtype"]
        self.steps = keyed_steps_per_epoch(self.rows, batch_size)
        self.verbose = verbose

    def write(self, epoch, batches):
        """Writes `epoch` from its `(epoch, index, teacher input)` batches."""
        os.makedirs(mf.epoch_dir(self.directory, epoch), exist_ok=True)
        arrays = {
            spec.key: np.lib.format.open_memmap(
                mf.array_path(self.directory, epoch, spec),
                mode="w+",
                dtype=self.dtype,
                shape=(self.rows, spec.width),
            )
            for spec in self.specs
        }
        progbar = keras.utils.Progbar(self.steps, verbose=self.verbose, unit_name="batch")
        for step, (_, index, batch) in enumerate(batches):
            outputs = self.model.predict_on_batch(batch)
            for spec in self.specs:
                arrays[spec.key][index] = self._rows(spec, outputs, len(index))
            progbar.update(step + 1)
        for array in arrays.values():
            array.flush()

    def _rows(self, spec, outputs, size):
        """The rows of one array in a batch's outputs (both views in one pass)."""
        values = outputs["logits"] if spec.output == mf.LOGITS else outputs["features"][spec.path]
        view = self.views.index(spec.view)
        rows = np.asarray(values)[view * size : (view + 1) * size]
        limit = np.finfo(self.dtype).max
        if self.dtype != "float32" and np.any(np.abs(rows) > limit):
            raise ValueError(
                f"build_teacher_cache: the teacher's {spec.output} ({spec.view} view"
                f"{', ' + repr(spec.path) if spec.path else ''}) exceeds the range of "
                f"{self.dtype} (|value| up to {np.abs(rows).max():.4g}). Build the cache "
                "with dtype='float32'."
            )
        return rows
