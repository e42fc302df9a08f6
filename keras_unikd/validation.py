"""Checks of the Distiller's arguments and data that fail early with a clear fix.

Each check raises before anything is traced or trained, with a message that
names the problem and what to do about it.
"""

import os
import sys

import keras


def check_choice(argument, value, choices):
    """Raises a `ValueError` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"Unknown {argument}={value!r}; expected one of "
            f"{', '.join(repr(choice) for choice in choices)}."
        )


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
    return keras.saving.load_model(path, compile=False)


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


def _is_tf_dataset(data):
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
    if _is_tf_dataset(data):
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
