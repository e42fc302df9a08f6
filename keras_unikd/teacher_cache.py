"""Teacher-output cache: the frozen teacher's outputs for every keyed view, on disk.

The teacher is frozen, yet an online Distiller recomputes its forward pass
at every step. With keyed augmentation (`keras_unikd.data.keyed`) the view
of example `i` in epoch `e` is a pure function of `(seed, e, i)`, so the
teacher's outputs for it can be computed once and read back by `(epoch,
index)`. What is stored is what the terms read of the teacher, as they
declare it (`DistillationTerm.teacher_needs`): the logits, and for a
`UniKDFeatures` whose teacher side is a single `DistributionHead` the tapped
feature pooled exactly as that head pools it (`DistributionHead.pool`), on
one view or both.

`build_teacher_cache` runs the teacher (inference mode, batched) over the
views of `make_keyed_image_pipeline(..., with_keys=True)` (the views of
`keyed_views`) for N epochs and writes them into a directory:

    <directory>/manifest.json            what the cache was built from, and
                                         which epochs are complete
    <directory>/epoch_0000/weak.logits.npy      (N, num_classes)
    <directory>/epoch_0000/weak.pooled_0.npy    (N, channels of feature 0)
    <directory>/epoch_0000/strong.logits.npy    (two-view caches)
    ...

one `.npy` file per epoch, view and output (float32, or float16 on request),
written through `numpy.lib.format.open_memmap` and read memory-mapped. An
epoch is recorded complete in the manifest only once all its files are
written and flushed, so an interrupted build resumes at the first incomplete
epoch, and a longer build extends a shorter cache.

`open_teacher_cache` checks a cache against the training that wants it (the
teacher's weights, the data, the augmentation, the seed, the views and
outputs the terms need, the epochs, the files' sizes) and raises a
`ValueError` that names the difference and the fix; `TeacherCache.lookup`
returns the teacher's outputs of a batch of `(epoch, index)` keys.

`cached_teacher_pipeline` yields the training batches with those outputs
attached, `({"inputs": views, "cached_teacher": outputs}, labels)`; a
`keras_unikd.Distiller` recognises them (`split_cached_batch`) and builds
its record from the outputs (`teacher_views_from_cache`) instead of running
the teacher.
"""

import hashlib
import itertools
import json
import os
import time
import warnings

import keras
import numpy as np
from keras import ops

from keras_unikd.heads import ModelLogits
from keras_unikd.layers import DistributionHead
from keras_unikd.taps import FeatureTap
from keras_unikd.terms.base import DistillationTerm
from keras_unikd.terms.base import TeacherNeeds
from keras_unikd.validation import check_positive_int

FORMAT = "keras_unikd.teacher_cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16")
VIEWS = ("weak", "strong")

# The manifest fields a cache is identified by, with what a mismatch means
# and how to fix it (the fix of each is the same: another cache).
_IDENTITY = (
    ("teacher", "teacher weights"),
    ("dataset", "training data (images or labels)"),
    ("augmentation", "augmentation options"),
    ("seed", "seed"),
)


def teacher_fingerprint(teacher):
    """A SHA-256 of a model's weights: shapes, dtypes and values, in order.

    Names are left out (Keras numbers them per session), so the same
    architecture with the same weights gives the same fingerprint in any
    process and under any backend. A cache records its teacher's.

    Args:
        teacher: A `keras.Model`.

    Returns:
        A hex string.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> teacher_fingerprint(model) == teacher_fingerprint(model)
    True
    """
    if not isinstance(teacher, keras.Model):
        raise TypeError(f"teacher_fingerprint expects a keras.Model; got {type(teacher).__name__}.")
    digest = hashlib.sha256()
    for weight in teacher.weights:
        value = np.ascontiguousarray(ops.convert_to_numpy(weight))
        digest.update(f"{value.dtype.str}{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def dataset_fingerprint(images, labels):
    """The shapes, dtypes and SHA-256 hashes of a training set's arrays.

    Args:
        images: The training images, `(N, H, W, C)`.
        labels: The labels, `(N,)` integers (hashed as int64, so int32 and
            int64 labels agree).

    Returns:
        A JSON-ready dict.

    Example:

    >>> import numpy as np
    >>> fingerprint = dataset_fingerprint(np.zeros((2, 4, 4, 1), "uint8"), [0, 1])
    >>> fingerprint["num_examples"], fingerprint["image_shape"], fingerprint["image_dtype"]
    (2, [4, 4, 1], 'uint8')
    """
    images = np.ascontiguousarray(images)
    labels = np.ascontiguousarray(np.asarray(labels).astype("int64"))
    return {
        "num_examples": int(images.shape[0]) if images.ndim else 0,
        "image_shape": [int(d) for d in images.shape[1:]],
        "image_dtype": str(images.dtype),
        "images_sha256": hashlib.sha256(images.data).hexdigest(),
        "labels_sha256": hashlib.sha256(labels.data).hexdigest(),
    }


def _per_channel(value, channels, name, fn):
    if value is None:
        return None
    array = np.asarray(value, "float64").reshape(-1)
    if array.size not in (1, channels):
        raise ValueError(
            f"{fn}: `{name}` must be one number or one per channel ({channels}); got {value!r}."
        )
    return [float(v) for v in np.broadcast_to(array, (channels,))]


def augmentation_config(
    image_shape,
    augment=False,
    mean=None,
    std=None,
    crop_padding=None,
    num_ops=2,
    cutout_size=None,
    fn="augmentation_config",
):
    """The keyed pipeline's options as a cache records them, defaults resolved.

    Options that give the same views compare equal: `crop_padding=None` is
    0 and `cutout_size=None` half the shorter side (as the strong view
    resolves them); `mean` and `std` are per-channel lists.

    Args:
        image_shape: `(H, W, C)` of the images.
        augment, mean, std, crop_padding, num_ops, cutout_size: The options
            of `make_keyed_image_pipeline` / `keyed_views` (`two_views` is
            recorded as the cache's views).
        fn: The caller's name, for messages.

    Returns:
        A JSON-ready dict.

    Example:

    >>> augmentation_config((32, 32, 3), augment=True, mean=0.5, std=0.25)["mean"]
    [0.5, 0.5, 0.5]
    """
    height, width, channels = (int(d) for d in image_shape)
    if cutout_size is None:
        cutout_size = max(1, min(height, width) // 2)
    return {
        "augment": augment,
        "mean": _per_channel(mean, channels, "mean", fn),
        "std": _per_channel(std, channels, "std", fn),
        "crop_padding": int(crop_padding or 0),
        "num_ops": num_ops,
        "cutout_size": cutout_size,
    }


def _needs(terms, fn):
    """The terms' combined `TeacherNeeds`, or a `ValueError` if not cacheable."""
    if isinstance(terms, TeacherNeeds):
        needs = terms
    else:
        terms = list(terms) if isinstance(terms, (list, tuple)) else [terms]
        for term in terms:
            if not isinstance(term, DistillationTerm):
                raise ValueError(
                    f"{fn}: `terms` must be DistillationTerms (or a TeacherNeeds); "
                    f"got {type(term).__name__}."
                )
        needs = TeacherNeeds.combine(term.teacher_needs() for term in terms)
    if not needs.cacheable:
        raise ValueError(
            f"{fn}: these terms cannot be trained from a teacher cache: {needs.reason}. "
            "Train them online (the teacher runs every step)."
        )
    if not needs.logits and not needs.pooled_features:
        raise ValueError(
            f"{fn}: the terms read nothing of the teacher (e.g. CrossEntropy alone), "
            "so there is nothing to cache."
        )
    return needs


def _views(two_views, needs, fn):
    if not isinstance(two_views, bool):
        raise ValueError(f"{fn}: `two_views` must be True or False; got {two_views!r}.")
    if needs.views == 2 and not two_views:
        raise ValueError(
            f"{fn}: the terms read two views per example (e.g. MLKD), but "
            "`two_views=False`. Pass `two_views=True` (the training batches are "
            "((weak, strong), labels))."
        )
    return VIEWS if two_views else VIEWS[:1]


def _array_name(view, pooled_index=None):
    """The file stem of a view's logits, or of its `pooled_index`-th pooled feature."""
    return f"{view}.logits" if pooled_index is None else f"{view}.pooled_{pooled_index}"


def _array_names(views, needs):
    names = []
    for view in views:
        if needs.logits:
            names.append(_array_name(view))
        names.extend(_array_name(view, i) for i in range(len(needs.pooled_features)))
    return names


def _training_arrays(images, labels, fn):
    """`images` and `labels` as arrays, checked to be `(N, H, W, C)` and `(N,)`."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{fn}: `images` must be (N, H, W, C) and `labels` (N,); got shapes "
            f"{images.shape} and {labels.shape}."
        )
    return images, labels


def _epoch_dir(directory, epoch):
    return os.path.join(directory, f"epoch_{epoch:04d}")


def _array_path(directory, epoch, name):
    return os.path.join(_epoch_dir(directory, epoch), f"{name}.npy")


def _write_manifest(directory, manifest):
    path = os.path.join(directory, MANIFEST)
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        json.dump(manifest, file, indent=1, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _read_manifest(directory, fn):
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise ValueError(
            f"{fn}: no teacher cache at {directory!r} ({MANIFEST} is missing). "
            "Build one with keras_unikd.teacher_cache.build_teacher_cache(...)."
        )
    try:
        with open(path) as file:
            manifest = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{fn}: the manifest {path!r} cannot be read ({error}). The cache is "
            "damaged: delete the directory and build it again."
        ) from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{fn}: {path!r} is not a keras_unikd teacher cache of format version "
            f"{FORMAT_VERSION} (format {manifest.get('format')!r}, version "
            f"{manifest.get('format_version')!r}). Build the cache again in a new directory."
        )
    return manifest


def _versions():
    import tensorflow as tf

    from keras_unikd import __version__

    return {
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "keras_unikd": __version__,
        "backend": keras.backend.backend(),
    }


def _short(value):
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_identity(manifest, expected, directory, fn):
    """`ValueError` naming every identity field that differs.

    The teacher is identified by its weights alone (its record also holds
    its name and class count, for reading).
    """
    manifest, expected = dict(manifest), dict(expected)
    for record in (manifest, expected):
        record["teacher"] = {"weights_sha256": (record.get("teacher") or {}).get("weights_sha256")}
    problems = []
    for key, what in _IDENTITY:
        if manifest.get(key) != expected[key]:
            if isinstance(expected[key], dict) and isinstance(manifest.get(key), dict):
                fields = sorted(
                    field
                    for field in set(expected[key]) | set(manifest[key])
                    if manifest[key].get(field) != expected[key].get(field)
                )
                detail = "; ".join(
                    f"{field}: cache {_short(manifest[key].get(field))}, "
                    f"now {_short(expected[key].get(field))}"
                    for field in fields
                )
            else:
                detail = f"cache {_short(manifest.get(key))}, now {_short(expected[key])}"
            problems.append(f"other {what} ({detail})")
    if problems:
        raise ValueError(
            f"{fn}: the teacher cache at {directory!r} was built for "
            + ", and ".join(problems)
            + ". Its outputs are not this training's teacher outputs. Build a cache "
            "for this setup in a new directory (or delete this one and build again)."
        )


def _check_outputs(manifest, views, needs, directory, fn):
    """`ValueError` unless the cache holds every view and output needed."""
    missing = [f"the {view} view" for view in views if view not in manifest["views"]]
    if needs.logits and not manifest["outputs"]["logits"]:
        missing.append("the teacher's logits")
    missing.extend(
        f"the pooled teacher feature {path!r}"
        for path in needs.pooled_features
        if path not in manifest["outputs"]["pooled_features"]
    )
    if missing:
        raise ValueError(
            f"{fn}: the teacher cache at {directory!r} lacks {', '.join(missing)} "
            f"(it holds views {manifest['views']}, logits: {manifest['outputs']['logits']}, "
            f"pooled features {manifest['outputs']['pooled_features']}). Build a cache "
            "for these terms and views in a new directory."
        )


def _expected_manifest(teacher_hash, images, labels, seed, augmentation, views, needs, dtype):
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "teacher": {"weights_sha256": teacher_hash},
        "dataset": dataset_fingerprint(images, labels),
        "augmentation": augmentation,
        "seed": seed,
        "views": list(views),
        "outputs": {"logits": needs.logits, "pooled_features": list(needs.pooled_features)},
        "dtype": dtype,
    }


def _output_model(teacher, paths, image_shape, token_layouts, fn):
    """A model of the teacher's float32 logits and pooled tapped features."""
    logits_model = ModelLogits(teacher, "teacher").logits_model
    tap = FeatureTap(logits_model, paths, token_layouts=token_layouts)
    if len(tap.tap_model.inputs) != 1:
        raise ValueError(
            f"{fn}: the teacher has {len(tap.tap_model.inputs)} inputs; a teacher cache "
            "is built over image pipelines, for single-input teachers."
        )
    teacher_shape = tuple(tap.tap_model.inputs[0].shape[1:])
    if any(t is not None and t != d for t, d in zip(teacher_shape, image_shape)) or len(
        teacher_shape
    ) != len(image_shape):
        raise ValueError(
            f"{fn}: the teacher's input shape {teacher_shape} does not match the "
            f"images' {tuple(image_shape)}."
        )
    inputs = keras.Input(shape=tuple(image_shape), name="cached_view")
    logits, features = tap(inputs, training=False)
    outputs = [ops.cast(logits, "float32")]
    outputs += [ops.cast(DistributionHead.pool(feature), "float32") for feature in features]
    for path, output in zip(paths, outputs[1:]):
        if len(output.shape) != 2:
            raise ValueError(
                f"{fn}: teacher layer {path!r} pools to shape {tuple(output.shape)}; "
                "a cached pooled feature must be a (batch, C) vector."
            )
    layouts = {path: layout.config() for path, layout in tap.token_layouts.items()}
    return keras.Model(inputs, outputs, name=f"{teacher.name}_cache_outputs"), layouts


def _create_arrays(directory, epoch, names, dims, num_examples, dtype):
    os.makedirs(_epoch_dir(directory, epoch), exist_ok=True)
    return {
        name: np.lib.format.open_memmap(
            _array_path(directory, epoch, name),
            mode="w+",
            dtype=dtype,
            shape=(num_examples, dims[name]),
        )
        for name in names
    }


def _keyed_batches(images, labels, seed, options, views, batch_size, first, stop):
    """`(epoch, index, teacher input)` of each batch of epochs `first .. stop - 1`.

    One keyed pipeline for the run of epochs (its graph is traced once);
    both views of a batch are concatenated into one teacher input.
    """
    from keras_unikd.data.keyed import make_keyed_image_pipeline

    dataset = make_keyed_image_pipeline(
        images,
        labels,
        batch_size,
        seed,
        epochs=stop,
        start_epoch=first,
        two_views=len(views) == 2,
        with_keys=True,
        **options,
    )
    for x, _, keys in dataset.as_numpy_iterator():
        # Batches never straddle two epochs.
        batch = np.concatenate(x, axis=0) if len(views) == 2 else x
        yield int(keys["epoch"][0]), keys["index"], batch


def _write_epoch(
    directory, epoch, batches, model, sources, dims, num_examples, dtype, steps, verbose
):
    """Runs the teacher on one epoch's batches and writes the epoch's arrays.

    `batches` yields that epoch's `(epoch, index, teacher input)` (`steps`
    of them); `sources` maps each array name to `(view number, output of
    model)`.
    """
    arrays = _create_arrays(directory, epoch, list(sources), dims, num_examples, dtype)
    progbar = keras.utils.Progbar(steps, verbose=verbose, unit_name="batch")
    limit = np.finfo(dtype).max
    for step, (_, index, batch) in enumerate(batches):
        outputs = model.predict_on_batch(batch)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        size = len(index)
        for name, (view, output) in sources.items():
            rows = np.asarray(outputs[output])[view * size : (view + 1) * size]
            if dtype != "float32" and np.any(np.abs(rows) > limit):
                raise ValueError(
                    f"build_teacher_cache: the teacher's {name!r} exceeds the range "
                    f"of {dtype} (|value| up to {np.abs(rows).max():.4g}). Build the "
                    "cache with dtype='float32'."
                )
            arrays[name][index] = rows
        progbar.update(step + 1)
    for array in arrays.values():
        array.flush()
    del arrays


def build_teacher_cache(
    directory,
    teacher,
    terms,
    images,
    labels,
    seed,
    epochs,
    batch_size=256,
    dtype="float32",
    two_views=False,
    augment=False,
    mean=None,
    std=None,
    crop_padding=None,
    num_ops=2,
    cutout_size=None,
    teacher_token_layouts=None,
    verbose=1,
):
    """Writes the teacher's outputs for every keyed view of `epochs` epochs.

    For every epoch `e < epochs`, example index `i` and view (`"weak"`, and
    `"strong"` with `two_views`), the cache holds what the `terms` read of
    the teacher (`DistillationTerm.teacher_needs`): the logits, and the
    tapped features that a term only pools, pooled by
    `DistributionHead.pool`. The views are those of
    `make_keyed_image_pipeline(images, labels, ..., seed=seed, **options,
    with_keys=True)`, i.e. `keyed_views(images, seed, e, [i], **options)`;
    the teacher runs in inference mode on the logits before a final softmax
    (as in the `Distiller`), on `batch_size` examples (both views of them in
    one pass).

    The build resumes: the epochs the manifest records complete are kept
    (unless a file of theirs is missing or truncated: such an epoch is
    computed again, with a warning), the others computed, so an interrupted
    build continues where it stopped and a larger `epochs` extends a cache.
    A directory holding a cache of another teacher, data, augmentation,
    seed, views, outputs or dtype is a `ValueError`, never overwritten.

    Args:
        directory: The cache's directory (created if missing).
        teacher: The trained teacher, a functional or Sequential
            `keras.Model` whose one output is the logits (or a softmax).
        terms: The `DistillationTerm`s of the training (or their combined
            `TeacherNeeds`); terms that read nothing of the teacher
            (`CrossEntropy`) may be included.
        images: The training images `(N, H, W, C)` in [0, 255], as given
            to the keyed pipeline.
        labels: The training labels `(N,)` (hashed into the manifest).
        seed: The keyed pipeline's seed.
        epochs: The number of epochs to cache (`0 .. epochs - 1`).
        batch_size: The teacher's batch size (does not change the views).
        dtype: `"float32"` or `"float16"` (half the size; values beyond
            float16's range are an error).
        two_views, augment, mean, std, crop_padding, num_ops, cutout_size:
            The options of `make_keyed_image_pipeline` (e.g.
            `**CIFAR100_KEYED_OPTIONS, two_views=True`).
        teacher_token_layouts: As the `Distiller`'s, for token features.
        verbose: 0 (silent) or 1 (a line and a progress bar per epoch).

    Returns:
        The built `TeacherCache`, opened for `epochs` epochs.

    Raises:
        ValueError: If the terms cannot be cached (their `teacher_needs()`
            says why) or read nothing of the teacher, the terms need two
            views without `two_views`, an option is bad, or the directory
            holds another cache.

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
    from keras_unikd.data.keyed import keyed_steps_per_epoch

    fn = "build_teacher_cache"
    needs = _needs(terms, fn)
    views = _views(two_views, needs, fn)
    if dtype not in DTYPES:
        raise ValueError(f"{fn}: `dtype` must be one of {DTYPES}; got {dtype!r}.")
    check_positive_int("epochs", epochs, fn=fn)
    check_positive_int("batch_size", batch_size, fn=fn)
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"{fn}: `verbose` must be 0, 1 or 2; got {verbose!r}.")
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or len(images) == 0 or labels.shape != (len(images),):
        raise ValueError(
            f"{fn}: `images` must be a non-empty (N, H, W, C) array and `labels` "
            f"(N,); got shapes {images.shape} and {labels.shape}."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{fn}: `seed` must be a non-negative integer; got {seed!r}.")
    options = {
        "augment": augment,
        "mean": mean,
        "std": std,
        "crop_padding": crop_padding,
        "num_ops": num_ops,
        "cutout_size": cutout_size,
    }
    augmentation = augmentation_config(images.shape[1:], fn=fn, **options)
    model, layouts = _output_model(
        teacher, needs.pooled_features, images.shape[1:], teacher_token_layouts, fn
    )
    expected = _expected_manifest(
        teacher_fingerprint(teacher), images, labels, int(seed), augmentation, views, needs, dtype
    )
    expected["teacher"].update(
        {
            "name": teacher.name,
            "num_classes": int(model.outputs[0].shape[-1]),
            "token_layouts": layouts,
        }
    )
    names = _array_names(views, needs)
    sources = {}  # array name -> (view number, output of `model`)
    for name in names:
        view, output = name.split(".", 1)
        index = 0 if output == "logits" else 1 + int(output.split("_")[1])
        sources[name] = (views.index(view), index)
    dims = {name: int(model.outputs[index].shape[-1]) for name, (_, index) in sources.items()}
    expected["arrays"] = [
        {
            "name": name,
            "view": name.split(".")[0],
            "holds": (
                "logits"
                if name.endswith(".logits")
                else "pooled:" + needs.pooled_features[int(name.rsplit("_", 1)[1])]
            ),
            "shape_per_epoch": [len(images), dims[name]],
        }
        for name in names
    ]

    os.makedirs(directory, exist_ok=True)
    manifest_path = os.path.join(directory, MANIFEST)
    if os.path.exists(manifest_path):
        manifest = _read_manifest(directory, fn)
        _check_identity(manifest, expected, directory, fn)
        for key in ("views", "outputs", "dtype", "arrays"):
            if manifest.get(key) != expected[key]:
                raise ValueError(
                    f"{fn}: the teacher cache at {directory!r} holds other {key} "
                    f"(cache {_short(manifest.get(key))}, now {_short(expected[key])}). "
                    "Build this cache in a new directory (or delete this one)."
                )
        if manifest["teacher"].get("token_layouts") != layouts:
            raise ValueError(
                f"{fn}: the teacher cache at {directory!r} read the teacher's token "
                f"features with other layouts ({manifest['teacher'].get('token_layouts')} "
                f"vs {layouts}). Build this cache in a new directory."
            )
        manifest["epochs"] = max(int(manifest["epochs"]), int(epochs))
    else:
        manifest = dict(expected, epochs=int(epochs), epochs_complete=[], build_seconds={})
    manifest["versions"] = _versions()
    manifest["batch_size"] = int(batch_size)
    _write_manifest(directory, manifest)

    complete = set(manifest["epochs_complete"])
    for epoch in sorted(complete):
        if epoch >= epochs:
            continue
        try:
            for name in names:
                _check_file(
                    _array_path(directory, epoch, name),
                    (len(images), dims[name]),
                    dtype,
                    directory,
                    epoch,
                    fn,
                )
        except ValueError as error:
            warnings.warn(f"{error} Epoch {epoch} is computed again.", stacklevel=2)
            complete.discard(epoch)
    steps = keyed_steps_per_epoch(len(images), int(batch_size))
    todo = [epoch for epoch in range(int(epochs)) if epoch not in complete]
    # One keyed pipeline per run of consecutive epochs to compute.
    runs = [[todo[0]]] if todo else []
    for epoch in todo[1:]:
        if epoch == runs[-1][-1] + 1:
            runs[-1].append(epoch)
        else:
            runs.append([epoch])
    for run in runs:
        start = time.perf_counter()  # an epoch's time includes the pipeline's setup
        batches = _keyed_batches(
            images, labels, int(seed), options, views, int(batch_size), run[0], run[-1] + 1
        )
        for epoch, epoch_batches in itertools.groupby(batches, key=lambda batch: batch[0]):
            if verbose:
                print(f"Teacher cache {directory}: epoch {epoch + 1}/{epochs}")
            _write_epoch(
                directory,
                epoch,
                epoch_batches,
                model,
                sources,
                dims,
                len(images),
                dtype,
                steps,
                verbose,
            )
            complete.add(epoch)
            manifest["epochs_complete"] = sorted(complete)
            manifest["build_seconds"][str(epoch)] = round(time.perf_counter() - start, 3)
            _write_manifest(directory, manifest)
            start = time.perf_counter()
    return TeacherCache(directory, manifest, int(epochs))


def _check_file(path, shape, dtype, directory, epoch, fn):
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


def open_teacher_cache(
    directory,
    teacher,
    terms,
    images,
    labels,
    seed,
    epochs,
    two_views=False,
    augment=False,
    mean=None,
    std=None,
    crop_padding=None,
    num_ops=2,
    cutout_size=None,
    teacher_token_layouts=None,
):
    """Opens a teacher cache for a training, checking that it is that training's.

    Every check a reuse needs is made here, each failure a `ValueError`
    naming the problem and its fix: the teacher's weights (its
    fingerprint), the data, the augmentation options and the seed must be
    those the cache was built with; the cache must hold every view and
    output the `terms` read; epochs `0 .. epochs - 1` must be complete; and
    each of their files must be a whole `.npy` array of the manifest's
    shape and dtype. A cache built under another TensorFlow version warns
    (its keyed views may differ); one built under another Keras backend is
    fine.

    Args:
        directory: The cache's directory.
        teacher: The teacher (`keras.Model`), or its `teacher_fingerprint`
            when the teacher is not loaded (the token layouts are then not
            checked).
        terms: The training's `DistillationTerm`s (or their `TeacherNeeds`).
        images, labels, seed: The training's data and keyed seed.
        epochs: The epochs the training runs (`fit`'s `epochs`).
        two_views, augment, mean, std, crop_padding, num_ops, cutout_size:
            The training pipeline's keyed options.
        teacher_token_layouts: As at build time.

    Returns:
        A `TeacherCache`.

    Raises:
        ValueError: As above, or if the terms cannot be cached.

    Example:

    >>> import keras, numpy as np, tempfile
    >>> from keras_unikd import terms
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
    needs = _needs(terms, fn)
    views = _views(two_views, needs, fn)
    check_positive_int("epochs", epochs, fn=fn)
    images, labels = _training_arrays(images, labels, fn)
    manifest = _read_manifest(directory, fn)
    if isinstance(teacher, str):
        teacher_hash, layouts = teacher, None
    else:
        teacher_hash = teacher_fingerprint(teacher)
        layouts = {}
        if needs.pooled_features:
            logits_model = ModelLogits(teacher, "teacher").logits_model
            tap = FeatureTap(logits_model, needs.pooled_features, teacher_token_layouts)
            layouts = {path: layout.config() for path, layout in tap.token_layouts.items()}
    options = {
        "augment": augment,
        "mean": mean,
        "std": std,
        "crop_padding": crop_padding,
        "num_ops": num_ops,
        "cutout_size": cutout_size,
    }
    expected = _expected_manifest(
        teacher_hash,
        images,
        labels,
        seed,
        augmentation_config(images.shape[1:], fn=fn, **options),
        views,
        needs,
        manifest.get("dtype"),
    )
    _check_identity(manifest, expected, directory, fn)
    _check_outputs(manifest, views, needs, directory, fn)
    cached_layouts = manifest["teacher"].get("token_layouts", {})
    if layouts is not None and any(
        cached_layouts.get(path) != layouts.get(path) for path in needs.pooled_features
    ):
        raise ValueError(
            f"{fn}: the teacher cache at {directory!r} read the teacher's token features "
            f"with the layouts {cached_layouts}, this training with {layouts}. Build a "
            "cache with this training's teacher_token_layouts."
        )
    complete = set(manifest["epochs_complete"])
    missing = [epoch for epoch in range(int(epochs)) if epoch not in complete]
    if missing:
        held = _leading(complete)
        raise ValueError(
            f"{fn}: the teacher cache at {directory!r} holds epochs 0 .. {held - 1} "
            f"complete, but the training asks for {epochs} (epoch {missing[0]} is "
            f"missing). Run build_teacher_cache(..., epochs={epochs}) with the same "
            "arguments: it keeps the finished epochs and computes the rest."
        )
    tf_version = _versions()["tensorflow"]
    if manifest["versions"]["tensorflow"] != tf_version:
        warnings.warn(
            f"The teacher cache at {directory!r} was built with TensorFlow "
            f"{manifest['versions']['tensorflow']}, this process runs {tf_version}: "
            "the keyed augmentation's stateless random ops may draw other views. "
            "Rebuild the cache if exactness matters.",
            stacklevel=2,
        )
    for epoch in range(int(epochs)):
        for entry in manifest["arrays"]:
            _check_file(
                _array_path(directory, epoch, entry["name"]),
                entry["shape_per_epoch"],
                manifest["dtype"],
                directory,
                epoch,
                fn,
            )
    return TeacherCache(directory, manifest, int(epochs))


def _leading(complete):
    """The number of epochs `0, 1, ...` complete without a gap."""
    count = 0
    while count in complete:
        count += 1
    return count


class TeacherCache:
    """An opened teacher cache: the teacher's outputs by `(epoch, index)`.

    Made by `build_teacher_cache` or `open_teacher_cache` (which check it);
    not constructed directly.

    Attributes:
        directory: The cache's directory.
        manifest: The manifest, a dict (see the module docstring).
        epochs: The epochs it was opened for; `lookup` reads epochs below.
        views: `("weak",)` or `("weak", "strong")`.
        logits: Whether it holds the teacher's logits.
        pooled_features: The teacher layer paths whose pooled features it
            holds.
        num_examples: The number of training examples.
        dtype: The stored dtype, `"float32"` or `"float16"`.
    """

    def __init__(self, directory, manifest, epochs):
        self.directory = directory
        self.manifest = manifest
        self.epochs = epochs
        self.views = tuple(manifest["views"])
        self.logits = manifest["outputs"]["logits"]
        self.pooled_features = tuple(manifest["outputs"]["pooled_features"])
        self.num_examples = manifest["dataset"]["num_examples"]
        self.dtype = manifest["dtype"]
        self._arrays = {}

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

    def _array(self, epoch, name):
        key = (epoch, name)
        if key not in self._arrays:
            self._arrays[key] = np.load(_array_path(self.directory, epoch, name), mmap_mode="r")
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
            `{view: {"logits": (batch, num_classes), "pooled_features":
            {layer path: (batch, channels)}}}` of NumPy arrays, for each view
            of `views` (`"logits"` only when the cache holds them).

        Raises:
            ValueError: For indices outside `[0, num_examples)`, epochs
                outside `[0, epochs)`, or mismatched lengths.
        """
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
        unique = np.unique(epochs)

        def gather(name):
            if len(unique) == 1:
                rows = self._array(int(unique[0]), name)[indices]
            else:
                first = self._array(int(unique[0]), name)
                rows = np.empty((len(indices), first.shape[1]), first.dtype)
                for epoch in unique:
                    mask = epochs == epoch
                    rows[mask] = self._array(int(epoch), name)[indices[mask]]
            return np.asarray(rows) if dtype is None else np.asarray(rows, dtype)

        outputs = {}
        for view in self.views:
            entry = {
                "pooled_features": {
                    path: gather(_array_name(view, i))
                    for i, path in enumerate(self.pooled_features)
                }
            }
            if self.logits:
                entry["logits"] = gather(_array_name(view))
            outputs[view] = entry
        return outputs


#: The keys of a batch that carries the teacher's cached outputs:
#: `x = {INPUTS: the views, CACHED_TEACHER: the outputs}` (see
#: `cached_teacher_pipeline`); a `Distiller` given such a batch reads the
#: teacher's outputs from it instead of running the teacher.
INPUTS = "inputs"
CACHED_TEACHER = "cached_teacher"


def split_cached_batch(x):
    """`(inputs, cached teacher outputs)` of a batch's `x`, or `(x, None)`.

    A batch carries cached outputs when `x` is a dict with exactly the keys
    `"inputs"` and `"cached_teacher"` (what `cached_teacher_pipeline`
    yields); any other `x` (a tensor, a pair of views, a multi-input
    model's dict) is returned as is.

    Example:

    >>> split_cached_batch({"inputs": "views", "cached_teacher": "outputs"})
    ('views', 'outputs')
    >>> split_cached_batch({"image": "pixels", "text": "tokens"})
    ({'image': 'pixels', 'text': 'tokens'}, None)
    """
    if isinstance(x, dict) and set(x) == {INPUTS, CACHED_TEACHER}:
        return x[INPUTS], x[CACHED_TEACHER]
    return x, None


def cached_teacher_pipeline(
    cache,
    images,
    labels,
    batch_size,
    start_epoch=0,
    two_views=None,
    drop_remainder=False,
    num_parallel_calls=None,
):
    """The keyed training batches with the teacher's cached outputs attached.

    The batches are those of `make_keyed_image_pipeline(images, labels,
    batch_size, seed, cache.epochs, ...)` with the seed and augmentation
    options the cache was built with (read from its manifest, so the views
    cannot differ from the cached ones), each as `({"inputs": x,
    "cached_teacher": outputs}, labels)`: `x` is the batch of images, or
    the pair `(weak, strong)` of two-view batches, and `outputs` is
    `TeacherCache.lookup` of the batch's `(epoch, index)` keys, float32,
    `{view: {"logits": (batch, classes), "pooled_features": {layer path:
    (batch, channels)}}}`. A `Distiller` fed these batches builds its
    record from them and does not run the teacher. The lookup reads the
    memory-mapped epoch arrays in a `tf.numpy_function`, once per batch.

    As with `make_keyed_image_pipeline`, the dataset is finite (epochs
    `start_epoch .. cache.epochs - 1`): pass `fit` the
    `keyed_steps_per_epoch(len(images), batch_size, drop_remainder)` as
    `steps_per_epoch` and `epochs=cache.epochs` (resume with
    `initial_epoch=start_epoch`).

    Args:
        cache: A `TeacherCache` from `open_teacher_cache` (or
            `build_teacher_cache`), opened for the training's epochs.
        images, labels: The training arrays the cache was built from.
        batch_size: The training batch size (any: the views do not depend
            on it).
        start_epoch: The first epoch of the dataset.
        two_views: Whether the batches hold `(weak, strong)` views; `None`
            (default): as many views as the cache holds. `False` with a
            two-view cache gives its weak views alone (they do not depend
            on `two_views`).
        drop_remainder, num_parallel_calls: As in
            `make_keyed_image_pipeline`.

    Returns:
        A `tf.data.Dataset` of `({"inputs": x, "cached_teacher": outputs},
        labels)`.

    Raises:
        ValueError: If `cache` is not a `TeacherCache`, `images` or
            `labels` are not those of the cache, or `two_views=True` with
            a one-view cache (or an option is bad, as in
            `make_keyed_image_pipeline`).

    Example:

    >>> import keras, numpy as np, tempfile
    >>> from keras_unikd import terms
    >>> teacher = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                             keras.layers.Dense(3)])
    >>> x = np.arange(5 * 16, dtype="uint8").reshape(5, 4, 4, 1)
    >>> y = np.array([0, 1, 2, 0, 1])
    >>> cache = build_teacher_cache(tempfile.mkdtemp(), teacher, [terms.KD()], x, y,
    ...                             seed=0, epochs=2, augment=True, verbose=0)
    >>> batches = cached_teacher_pipeline(cache, x, y, batch_size=4)
    >>> inputs, labels = next(iter(batches))
    >>> tuple(inputs["inputs"].shape), tuple(inputs["cached_teacher"]["weak"]["logits"].shape)
    ((4, 4, 4, 1), (4, 3))
    >>> len(batches)  # 2 epochs of 2 batches
    4
    """
    import tensorflow as tf

    from keras_unikd.data.keyed import make_keyed_image_pipeline

    fn = "cached_teacher_pipeline"
    if not isinstance(cache, TeacherCache):
        raise ValueError(
            f"{fn}: `cache` must be a TeacherCache (from open_teacher_cache or "
            f"build_teacher_cache); got {type(cache).__name__}."
        )
    if two_views is None:
        two_views = len(cache.views) == 2
    if not isinstance(two_views, bool):
        raise ValueError(f"{fn}: `two_views` must be None, True or False; got {two_views!r}.")
    if two_views and len(cache.views) < 2:
        raise ValueError(
            f"{fn}: `two_views=True`, but the cache at {cache.directory!r} holds the weak "
            "view only. Build the cache with two_views=True (in a new directory)."
        )
    images, labels = _training_arrays(images, labels, fn)
    if dataset_fingerprint(images, labels) != cache.manifest["dataset"]:
        raise ValueError(
            f"{fn}: `images` and `labels` are not the training data the cache at "
            f"{cache.directory!r} was built from (shapes, dtypes or contents differ). "
            "Pass the same arrays as to open_teacher_cache."
        )
    views = VIEWS if two_views else VIEWS[:1]
    dims = {entry["name"]: entry["shape_per_epoch"][1] for entry in cache.manifest["arrays"]}
    slots = []  # (view, "logits" or a pooled layer path), in lookup order
    for view in views:
        if cache.logits:
            slots.append((view, "logits"))
        slots.extend((view, path) for path in cache.pooled_features)

    def lookup(epochs, indices):
        outputs = cache.lookup(epochs, indices)
        return [
            outputs[view]["logits"] if what == "logits" else outputs[view]["pooled_features"][what]
            for view, what in slots
        ]

    def array_name(view, what):
        if what == "logits":
            return _array_name(view)
        return _array_name(view, cache.pooled_features.index(what))

    def attach(x, y, keys):
        arrays = tf.numpy_function(
            lookup, [keys["epoch"], keys["index"]], [tf.float32] * len(slots), stateful=False
        )
        outputs = {view: {"pooled_features": {}} for view in views}
        for (view, what), array in zip(slots, arrays):
            array.set_shape((None, dims[array_name(view, what)]))
            if what == "logits":
                outputs[view]["logits"] = array
            else:
                outputs[view]["pooled_features"][what] = array
        return {INPUTS: x, CACHED_TEACHER: outputs}, y

    dataset = make_keyed_image_pipeline(
        images,
        labels,
        batch_size,
        cache.manifest["seed"],
        cache.epochs,
        start_epoch=start_epoch,
        two_views=two_views,
        with_keys=True,
        drop_remainder=drop_remainder,
        num_parallel_calls=num_parallel_calls,
        **cache.manifest["augmentation"],
    )
    return dataset.map(attach).prefetch(tf.data.AUTOTUNE)


def teacher_views_from_cache(cached, needs, num_views, num_classes, channels):
    """The teacher's `(logits, {layer path: pooled feature})` per view, from a batch.

    What a `Distiller` uses in place of the teacher's forward pass when a
    batch carries cached outputs (`split_cached_batch`): the logits and the
    pooled features its terms read (`needs`), float32 and under
    stop-gradient, for the weak view and, for two-view batches, the strong
    one. A `DistributionHead` fed a pooled `(batch, C)` vector returns what
    it returns for the map it was pooled from (`DistributionHead.pool`).

    Args:
        cached: The batch's cached outputs, `{view: {"logits": ...,
            "pooled_features": {path: ...}}}`.
        needs: The terms' combined `TeacherNeeds` (cacheable).
        num_views: 1 or 2, the views of the batch.
        num_classes: The logits' width.
        channels: `{layer path: channels}` of the teacher's tapped features.

    Returns:
        A list of `num_views` pairs `(logits or None, {path: (batch, C)})`.

    Raises:
        ValueError: If the batch lacks a view, the logits or a pooled
            feature the terms read, or holds one of another width.

    Example:

    >>> import numpy as np
    >>> cached = {"weak": {"logits": np.zeros((2, 3)), "pooled_features": {}}}
    >>> [(tuple(logits.shape), features) for logits, features in
    ...  teacher_views_from_cache(cached, TeacherNeeds(logits=True), 1, 3, {})]
    [((2, 3), {})]
    """
    fix = (
        "Build the cache (build_teacher_cache) for this Distiller's terms "
        "(terms=distiller.terms) and views, and feed cached_teacher_pipeline's batches."
    )
    views = VIEWS[:num_views]
    missing = [view for view in views if view not in cached]
    if missing:
        raise ValueError(
            f"The batch's cached teacher outputs lack the {' and '.join(missing)} view "
            f"(they hold {sorted(cached)}); the batch has {num_views} view(s). {fix}"
        )
    records = []
    for view in views:
        entry = cached[view]
        logits = None
        if needs.logits:
            if "logits" not in entry:
                raise ValueError(
                    f"The batch's cached teacher outputs lack the {view} view's logits, "
                    f"which the terms read. {fix}"
                )
            logits = ops.stop_gradient(ops.cast(entry["logits"], "float32"))
            if logits.shape[-1] != num_classes:
                raise ValueError(
                    f"The batch's cached teacher logits ({view} view) have "
                    f"{logits.shape[-1]} classes, the networks {num_classes}. {fix}"
                )
        pooled = entry.get("pooled_features", {})
        features = {}
        for path in needs.pooled_features:
            if path not in pooled:
                raise ValueError(
                    f"The batch's cached teacher outputs lack the pooled feature of "
                    f"teacher layer {path!r} ({view} view), which the terms read (they "
                    f"hold {sorted(pooled)}). {fix}"
                )
            feature = ops.stop_gradient(ops.cast(pooled[path], "float32"))
            if len(feature.shape) != 2 or feature.shape[-1] != channels[path]:
                raise ValueError(
                    f"The batch's cached pooled feature of teacher layer {path!r} "
                    f"({view} view) has shape {tuple(feature.shape)}; the layer has "
                    f"{channels[path]} channels, so (batch, {channels[path]}). {fix}"
                )
            features[path] = feature
        records.append((logits, features))
    return records
