"""Checks of the Distiller's models and of `fit`'s data that fail early with a clear fix.

Each check raises (or warns) before anything is traced or trained, with a
message that names the problem and what to do about it. Checks of single
arguments (numbers, choices, flags) are in `keras_unikd.validation`.
"""

import os
import sys
import warnings
import zipfile

import keras
import numpy as np


def load_model_argument(model, role):
    """Returns `model`, loading it first when it is a path to a saved model.

    Args:
        model: A `keras.Model`, or a `str` / `os.PathLike` path to a saved
            `.keras` file.
        role: `"teacher"` or `"student"`, for the messages.

    Returns:
        A `keras.Model` (loaded with `compile=False` from a path).

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: for a `.keras` file that is not a readable Keras archive
            (see `check_model_archive`).
    """
    if not isinstance(model, (str, os.PathLike)):
        return model
    path = os.fspath(model)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"The {role} file {path!r} does not exist. Save the trained "
            f"{role} there first ({role}.save({path!r})) or pass the path of "
            "an existing .keras file, or a keras.Model."
        )
    check_model_archive(path, role)
    return keras.saving.load_model(path, compile=False)


def check_model_archive(path, role):
    """Rejects an existing `.keras` path that is not a readable Keras archive.

    A `.keras` file is a zip archive holding `config.json`. A copy or a save
    that was cut short leaves a file that is not a zip archive at all (for
    which Keras says "File not found"), and a damaged one fails the
    archive's checksums. Other paths (`.h5`, ...) are left to Keras.

    Args:
        path: The path of an existing file or directory.
        role: `"teacher"` or `"student"`, for the message.

    Raises:
        ValueError: naming the path, what is wrong and the fix.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "teacher.keras")
    >>> with open(path, "wb") as file:
    ...     _ = file.write(b"not a zip archive")
    >>> try:
    ...     check_model_archive(path, "teacher")
    ... except ValueError as error:
    ...     print(str(error).split("' ")[1].split(":")[0])
    exists but is not a readable Keras model archive (not a zip archive)
    """
    if not os.fspath(path).endswith(".keras"):
        return
    problem = _archive_problem(path)
    if problem:
        raise ValueError(
            f"The {role} file {path!r} exists but is not a readable Keras model "
            f"archive ({problem}): it may be truncated or corrupt (an interrupted "
            f"save or copy). Save the {role} again ({role}.save({path!r})) or copy "
            "the file again, or pass another .keras file."
        )


def _archive_problem(path):
    """What keeps `path` from being read as a `.keras` archive, or `None`."""
    if os.path.isdir(path):
        return "a directory"
    if not zipfile.is_zipfile(path):
        return "not a zip archive"
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                return "no config.json in the archive"
            damaged = archive.testzip()  # checks every member's CRC
    except (zipfile.BadZipFile, EOFError) as error:
        return str(error)
    return f"bad checksum of {damaged!r}" if damaged else None


def deserialize_term(config):
    """A Distiller's term from its serialized config (as `get_config` writes it).

    Keras raises a `TypeError` for a class it cannot find, which its own
    loader then buries in a message about the whole Distiller's config; this
    names the term's class and the fix first.

    Args:
        config: A term's config from `keras.saving.serialize_keras_object`.

    Returns:
        The `DistillationTerm`.

    Raises:
        ValueError: when the term's class is not registered with Keras (nor
            given in `custom_objects`), or cannot be rebuilt from its config;
            the `TypeError` of Keras is chained.
    """
    try:
        return keras.saving.deserialize_keras_object(config)
    except TypeError as error:
        class_name = config.get("class_name")
        term = config.get("config", {}).get("name")
        if keras.saving.get_registered_object(config.get("registered_name") or class_name):
            raise ValueError(
                f"The Distiller's term {term!r} of class {class_name!r} cannot be rebuilt "
                f"from its saved config ({str(error).splitlines()[0][:300]}): a custom "
                "term's get_config() must return the arguments of its __init__; a "
                "keras_unikd term loads with the keras_unikd version that saved it."
            ) from error
        module = f" (module {config['module']!r})" if config.get("module") else ""
        raise ValueError(
            f"The Distiller's term {term!r} has class {class_name!r}{module}, which Keras "
            "cannot find: decorate the class with "
            "@keras.saving.register_keras_serializable() and import its module before "
            f"loading, or pass custom_objects={{{class_name!r}: {class_name}}} to "
            "keras.saving.load_model."
        ) from error


def check_no_shared_weights(teacher, student):
    """Rejects a student that shares weights (layers) with the teacher.

    The Distiller freezes every teacher layer (`teacher.trainable = False`);
    a layer shared with the student would be frozen in the student too, and
    the teacher would change while the student trains.

    Raises:
        ValueError: naming the shared weights.
    """
    teacher_ids = {id(weight) for weight in teacher.weights}
    shared = [weight.path for weight in student.weights if id(weight) in teacher_ids]
    if shared:
        listed = ", ".join(repr(path) for path in shared[:5])
        more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
        raise ValueError(
            f"The student shares {len(shared)} weight(s) with the teacher "
            f"({listed}{more}): freezing the teacher would freeze them in the "
            "student too, and training the student would change the teacher. "
            "Build the student from its own layers (for a copy of the "
            "teacher's architecture use keras.models.clone_model(teacher))."
        )


def _dataset_is_empty(dataset):
    """Whether a `tf.data.Dataset` yields nothing.

    The cardinality is known statically for most pipelines; only when it is
    unknown (after `filter`, say) is the first element fetched.
    """
    import tensorflow as tf

    cardinality = int(dataset.cardinality())
    if cardinality == int(tf.data.UNKNOWN_CARDINALITY):
        return next(iter(dataset.take(1)), None) is None
    return cardinality == 0


def is_tf_dataset(data):
    """Whether `data` is a `tf.data.Dataset` (without importing TensorFlow)."""
    # A tf.data.Dataset exists only when TensorFlow is imported already.
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def check_not_empty(data, argument):
    """Rejects training or validation data that yields no batch.

    Handles `tf.data.Dataset`s, `keras.utils.PyDataset`s and (nested)
    arrays; other inputs (Python generators, ...) are left to Keras.

    Args:
        data: What was passed to `fit` as `argument`.
        argument: `"x"` or `"validation_data"`, for the message.

    Raises:
        ValueError: when the data is empty.
    """
    if data is None:
        return
    if is_tf_dataset(data):
        empty = _dataset_is_empty(data)
    elif isinstance(data, keras.utils.PyDataset):
        empty = data.num_batches == 0
    else:
        leaves = [leaf for leaf in keras.tree.flatten(data) if hasattr(leaf, "shape")]
        empty = bool(leaves) and len(leaves[0].shape) > 0 and leaves[0].shape[0] == 0
    if empty:
        raise ValueError(
            f"The {argument} passed to fit is empty: it yields no batch, so "
            "there is nothing to train on. Check the data source and the "
            "pipeline (file patterns, filter, take/skip/shard, a batch size "
            "larger than the data with drop_remainder=True)."
        )


def _unpack(element):
    """`(x, y)` of a batch given as `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`."""
    x, y, _ = keras.utils.unpack_x_y_sample_weight(element)
    return x, y


def is_array(value):
    """Whether `value` is an array that `fit` reads by rows (NumPy, a tensor)."""
    return hasattr(value, "shape") and hasattr(value, "__getitem__")



def _to_numpy(value):
    if value is None or isinstance(value, np.ndarray):
        return value
    return keras.ops.convert_to_numpy(value) if keras.ops.is_tensor(value) else np.asarray(value)


def first_batch(x, y=None, batch_size=None):
    """The first `(x, y)` batch of `fit`'s data, read without taking it from the data.

    Arrays (NumPy, tensors, and nests of them) give their first
    `batch_size` rows (32 by default, as in `fit`), a `tf.data.Dataset` its
    first element (a fresh `take(1)` iteration, which fills a shuffle
    buffer once), a `keras.utils.PyDataset` its item 0. Python generators
    and iterators, and any other data (a `torch` `DataLoader` draws its
    shuffling seed from the global generator), cannot be read without
    changing what `fit` trains on: they give `None`.

    Args:
        x: What was passed to `fit` as `x`.
        y: What was passed to `fit` as `y`.
        batch_size: `fit`'s `batch_size`.

    Returns:
        `(x, y)` as NumPy arrays (nests of them for nested inputs; `y` may
        be `None`), or `None`.
    """
    if x is None:
        return None
    if is_tf_dataset(x):
        element = next(iter(x.take(1)), None)
        if element is None:
            return None
        x, y = _unpack(element)
    elif isinstance(x, keras.utils.PyDataset):
        if not x.num_batches:
            return None
        x, y = _unpack(x[0])
    elif all(is_array(leaf) for leaf in keras.tree.flatten((x, y)) if leaf is not None):
        rows = batch_size or 32
        x = keras.tree.map_structure(lambda array: array[:rows], x)
        y = None if y is None else keras.tree.map_structure(lambda array: array[:rows], y)
    else:
        return None
    y = None if y is None else keras.tree.map_structure(_to_numpy, y)
    return keras.tree.map_structure(_to_numpy, x), y


def check_integral_labels(y, num_classes=None, where="the first batch"):
    """Rejects labels that are not integer class ids: strings, and floats with a fractional part.

    The Distiller casts labels to int32: strings cannot be cast (the backends
    say `Cast string to int32 is not supported` or `Invalid dtype: str64`),
    and a fractional part (`2.5`; `3.0` is fine) would be truncated silently.

    Args:
        y: A batch of labels (array).
        num_classes: The number of classes, for the message, or `None`.
        where: Which batch it is, for the message.

    Raises:
        ValueError: naming the labels' dtype or a fractional label, and the fix.

    Example:

    >>> try:
    ...     check_integral_labels(np.array(["cat", "dog"]), num_classes=2)
    ... except ValueError as error:
    ...     print(str(error).split(". Map")[0])
    Labels must be integer class ids 0..1, but the first batch has strings (dtype <U3, e.g. 'cat')
    """
    y = np.asarray(y)
    ids = f"0..{num_classes - 1}" if num_classes else "0..num_classes-1"
    strings = _string_labels(y)
    if strings is not None:
        raise ValueError(
            f"Labels must be integer class ids {ids}, but {where} has strings "
            f"(dtype {y.dtype}, e.g. {strings!r}). Map the class names to ids first: "
            "keras.layers.StringLookup(vocabulary=class_names, num_oov_indices=0) in the "
            "data pipeline (ds.map(lambda x, y: (x, lookup(y)))), or for arrays "
            "class_names, y = np.unique(y, return_inverse=True)."
        )
    if not np.issubdtype(y.dtype, np.floating):
        return
    fractional = y[y != np.floor(y)]
    if fractional.size:
        raise ValueError(
            f"Labels must be integer class ids, but {where} has "
            f"{fractional.size} float label(s) with a fractional part (e.g. "
            f"{float(fractional.flat[0]):g}), which casting to int32 would "
            "truncate. "
            "Soft or smoothed labels (one-hot with label smoothing, mixup) "
            "are not class ids: give the class ids (argmax of soft labels), "
            "or cast whole-number float labels yourself with "
            "np.round(y).astype('int32')."
        )


def _string_labels(y):
    """A label of `y` (NumPy array) if it holds strings (or bytes), else `None`."""
    if not y.size or y.dtype.kind not in "USO":
        return None
    first = y.flat[0]
    if isinstance(first, bytes):
        first = first.decode("utf-8", "replace")
    return str(first) if isinstance(first, str) else None


def check_evaluation_labels(x, y, batch_size, num_classes, where="the first batch"):
    """Before `Distiller.evaluate` (and `fit`'s validation): `check_integral_labels`
    on the data's first batch.

    The batch is read as `fit`'s is (see `first_batch`); data that cannot be
    read ahead is left to the evaluation.
    """
    batch = first_batch(x, y, batch_size)
    if batch is not None and batch[1] is not None:
        check_integral_labels(batch[1], num_classes, where)


def check_validation_labels(validation_data, batch_size, num_classes):
    """`check_evaluation_labels` on `fit`'s `validation_data`, before training
    (bad labels there would otherwise stop the run at the end of its first epoch)."""
    if isinstance(validation_data, (tuple, list)):
        x, y = validation_data[0], validation_data[1] if len(validation_data) > 1 else None
    else:
        x, y = validation_data, None
    check_evaluation_labels(x, y, batch_size, num_classes, "validation_data's first batch")


def _not_class_ids(y, num_classes):
    """`(count, examples)` of the labels in array `y` that are not ids `0..num_classes-1`."""
    labels = np.asarray(_to_numpy(y)).reshape(-1)
    if not np.issubdtype(labels.dtype, np.number):
        return 0, []
    bad = labels[(labels < 0) | (labels >= num_classes) | (labels != np.floor(labels))]
    return bad.size, [f"{value:g}" for value in np.unique(bad)[:3]]


def _finite_weights(model):
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


def warn_about_a_nan_evaluation(distiller, y):
    """After `Distiller.evaluate`: a warning that says why its loss is NaN.

    The Distiller sets the loss of a batch whose labels are not class ids to
    NaN, so that nothing is averaged over wrong labels; `evaluate` keeps
    returning that NaN, and this warning names the cause: such labels
    (counted and shown when `y` is an array), NaN/Inf inputs, or a student
    whose weights are not finite.

    Args:
        distiller: The Distiller that has just evaluated.
        y: `evaluate`'s `y` (labels for array inputs), or `None`.
    """
    loss = distiller.get_metrics_result().get("loss")
    if loss is None or np.isfinite(loss):
        return
    classes = distiller.num_classes
    ids = f"Labels must be sparse integer class ids 0..{classes - 1}"
    if not _finite_weights(distiller.student):
        cause = (
            "the student's weights are not finite: a training step diverged. Lower the "
            "learning rate or the loss weights, or clip the gradients (clipnorm=...)."
        )
    elif y is not None and is_array(y):
        count, examples = _not_class_ids(y, classes)
        cause = (
            f"{count} of {len(y)} labels are not class ids (e.g. {', '.join(examples)}): the "
            f"Distiller sets the loss of their batches to NaN. {ids}: check the label "
            "pipeline (1-based labels? a different number of classes?)."
            if count
            else "the labels are class ids, so the inputs hold NaN or Inf: look for them "
            "(np.isfinite(x).all(), tf.debugging.check_numerics in a data pipeline)."
        )
    else:
        cause = (
            f"the data has labels outside [0, {classes}) or with a fractional part (the "
            "Distiller sets the loss of their batches to NaN), or NaN/Inf inputs. "
            f"{ids}: check the label pipeline (1-based labels? a different number of "
            "classes?) and look for NaN or Inf in the inputs."
        )
    warnings.warn(f"Distiller.evaluate: the loss is {loss}: {cause}", stacklevel=3)


# A trained classifier's logits rarely exceed a few tens; inputs on another
# scale than its training data's (0-255 pixels for a [0, 1] network) give
# logits far above this.
HUGE_LOGIT = 1e3

_RESCALE_FIX = (
    "Feed the inputs on the scale the teacher was trained on: e.g. x / 255 "
    "in the data pipeline for a teacher trained on [0, 1] images, or a "
    "keras.layers.Rescaling(1 / 255) layer at the start of both models."
)


def _describe_inputs(x):
    """`dtype ..., values in [min, max]` of each numeric array of `x`."""
    parts = []
    for leaf in keras.tree.flatten(x):
        leaf = np.asarray(leaf)
        if leaf.size and (np.issubdtype(leaf.dtype, np.number) or leaf.dtype == bool):
            parts.append(f"dtype {leaf.dtype}, values in [{leaf.min():g}, {leaf.max():g}]")
    return "; ".join(parts) or "no numeric array"


def _scales_its_inputs(model):
    """Whether `model` (or a model nested in it) has a Rescaling or Normalization layer."""
    return any(
        isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))
        or (isinstance(layer, keras.Model) and _scales_its_inputs(layer))
        for layer in model.layers
    )


def _integer_images(x):
    """The integer arrays of rank >= 3 (a batch of images) with values above 1."""
    leaves = [np.asarray(leaf) for leaf in keras.tree.flatten(x)]
    return [
        leaf
        for leaf in leaves
        if np.issubdtype(leaf.dtype, np.integer) and leaf.ndim >= 3 and leaf.size and leaf.max() > 1
    ]


def check_input_scale(x, teacher_logits, teacher):
    """Warns when a batch looks like inputs on another scale than the teacher's.

    `Distiller.fit` calls it on its first batch. Two signs, each a
    `UserWarning` that gives the inputs' dtype and range and the fix:

    - the teacher's logits on the batch are not finite, or some exceed
      `HUGE_LOGIT` (1e3) in absolute value: uint8 pixels fed to a teacher
      trained on [0, 1] images make every later loss huge;
    - the inputs are integer images (an integer array of rank 3 or more,
      such as uint8 pixels) with values above 1, and the teacher has no
      `Rescaling` or `Normalization` layer, so it sees the raw values. Token
      ids (integer arrays of rank 2) are not images and pass.

    Args:
        x: The batch's inputs (arrays, or a nest of arrays).
        teacher_logits: The teacher's logits on (part of) the batch.
        teacher: The teacher, for its name and layers, or `None` (a cached
            teacher: the integer-images check is skipped).
    """
    logits = np.asarray(teacher_logits, dtype="float64")
    inputs = _describe_inputs(x)
    name = teacher.name if teacher is not None else "teacher"
    if not np.all(np.isfinite(logits)):
        warnings.warn(
            f"The teacher {name!r} gives non-finite logits on the first "
            f"batch (inputs: {inputs}). NaN/Inf in the inputs, a teacher whose "
            "weights are not finite, or inputs on another scale than the "
            f"teacher's training data give such logits. {_RESCALE_FIX}",
            stacklevel=4,
        )
    elif logits.size and np.max(np.abs(logits)) > HUGE_LOGIT:
        warnings.warn(
            f"The teacher {name!r} gives logits up to "
            f"{np.max(np.abs(logits)):.3g} in absolute value on the first batch "
            f"(inputs: {inputs}): far beyond a trained network's, so the "
            "inputs are probably on another scale than the teacher's training "
            f"data, and every distillation loss will be huge. {_RESCALE_FIX}",
            stacklevel=4,
        )
    elif teacher is not None and _integer_images(x) and not _scales_its_inputs(teacher):
        warnings.warn(
            f"The first batch holds integer images ({inputs}) and the teacher "
            f"{name!r} has no Rescaling or Normalization layer, so it "
            "sees the raw values; unless it was trained on them, its outputs "
            f"mean little. {_RESCALE_FIX}",
            stacklevel=4,
        )


def require_example_index(terms, example_index):
    """`example_index`, or a `ValueError` when a term needs it and the batch has none.

    Args:
        terms: The Distiller's terms (`needs_example_index` says which read it).
        example_index: The batch's indices (`teacher_source.carried_example_index`)
            or `None`.
    """
    needing = [term.name for term in terms if term.needs_example_index]
    if example_index is None and needing:
        raise ValueError(
            f"Term(s) {needing} read each example's row in the training set, but the "
            "batch carries none: feed ({'inputs': x, 'example_index': index}, labels) "
            "batches, with with_example_index=True in make_keyed_image_pipeline, "
            "make_image_pipeline, cifar100_datasets or cached_teacher_pipeline, or "
            "keras_unikd.data.with_example_index(x, y) for arrays and unbatched datasets."
        )
    return example_index


def check_example_indices(terms, x, batch):
    """Before `fit`: the example indices of its data, for the terms that read them.

    Array data is checked whole (every index), other data on its first
    batch (see `first_batch`); data that cannot be read ahead (generators)
    is left to the training step.

    Args:
        terms: The Distiller's terms.
        x: `fit`'s `x`.
        batch: `first_batch(x, ...)`, or `None`.

    Raises:
        ValueError: when the data carries no indices, or a term rejects them
            (`DistillationTerm.check_example_index`: an index beyond its
            memory bank, say).
    """
    from keras_unikd.teacher_source import carried_example_index

    terms = [term for term in terms if term.needs_example_index]
    if not terms:
        return
    index = carried_example_index(x)
    if index is None or not is_array(index):
        if batch is None:
            return
        index = require_example_index(terms, carried_example_index(batch[0]))
    index = np.asarray(_to_numpy(index))
    for term in terms:
        term.check_example_index(index)
