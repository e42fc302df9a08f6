"""Where a run's data resumes after a backup: the batches from `(epoch, batch)` on.

`keras_unikd.callbacks.StepBackup` records the position of the next batch to
train, `(epoch, batch)`. To continue a run exactly from a backup taken in the
middle of an epoch, `fit`'s data must start at that batch; `data_source`
says how, for each kind of data:

- a dataset marked with `resumable(dataset, restart)` (the keyed pipelines
  and the teacher-cache pipeline mark theirs): `restart(epoch, batch)` makes
  the rest of the stream afresh, as the batches are a pure function of
  `(seed, epoch, index)`;
- a `tf.data.Dataset` under TensorFlow without a distribution strategy: the
  run reads it through one iterator of its own, which is saved with the
  backup as a `tf.data` iterator checkpoint (its shuffle buffers and random
  state included);
- in-memory arrays with `shuffle=False`: sliced at the batch;
- anything else: epoch boundaries only (`EpochSource`, with the reason).
"""

import dataclasses
import math
import os

import keras

from keras_unikd.distiller_checks import is_array
from keras_unikd.distiller_checks import is_tf_dataset

RESTART_ATTRIBUTE = "keras_unikd_restart"


def resumable(dataset, restart):
    """Marks `dataset` as one that can start again at any batch.

    Args:
        dataset: The training data as `fit` gets it (a `tf.data.Dataset`
            whose epochs are `steps_per_epoch` batches each, the first being
            epoch 0's first batch).
        restart: A function `restart(epoch, batch)` returning the same
            stream from batch `batch` of epoch `epoch` on.

    Returns:
        `dataset`, marked.

    Example:

    >>> import tensorflow as tf
    >>> stream = lambda epoch, batch: tf.data.Dataset.range(epoch * 3 + batch, 6).batch(1)
    >>> ds = resumable(stream(0, 0), stream)
    >>> [int(b[0]) for b in getattr(ds, RESTART_ATTRIBUTE)(1, 1)]
    [4, 5]
    """
    setattr(dataset, RESTART_ATTRIBUTE, restart)
    return dataset


@dataclasses.dataclass(frozen=True)
class Segment:
    """One `fit` call of a run: the epochs `initial_epoch .. epochs - 1` on `data`."""

    data: dict  # fit's x, y, batch_size, sample_weight, steps_per_epoch, ...
    initial_epoch: int
    epochs: int


class DataSource:
    """How a run's data restarts at a position; the base restarts at epochs only."""

    exact_batches = False

    def __init__(self, data, steps, reason=""):
        self.data = data  # fit's x, y, batch_size, sample_weight, steps_per_epoch
        self.steps = steps
        self.reason = reason

    def segments(self, epoch, batch, epochs):
        """The `fit` calls that train from batch `batch` of `epoch` to the end."""
        if batch:
            raise ValueError(
                f"The backup was taken after batch {batch} of epoch {epoch + 1}, but this "
                f"data resumes at epoch boundaries only: {self.reason}"
            )
        return [Segment(self.data, epoch, epochs)]

    def save(self, directory):
        """Writes the data's own position into a backup (nothing for most data)."""

    def restore(self, directory):
        """Reads the position `save` wrote."""


class RestartableSource(DataSource):
    """A dataset marked by `resumable`: each segment is made afresh."""

    exact_batches = True

    def segments(self, epoch, batch, epochs):
        restart = getattr(self.data["x"], RESTART_ATTRIBUTE)
        segments = []
        if batch:
            data = dict(self.data, x=restart(epoch, batch), steps_per_epoch=self.steps - batch)
            segments.append(Segment(data, epoch, epoch + 1))
            epoch += 1
        if epoch < epochs:
            data = self.data if epoch == 0 else dict(self.data, x=restart(epoch, 0))
            segments.append(Segment(data, epoch, epochs))
        return segments


class ArraySource(DataSource):
    """In-memory arrays read in order (`shuffle=False`): sliced at the batch."""

    exact_batches = True

    def segments(self, epoch, batch, epochs):
        segments = []
        if batch:
            start = batch * self.data["batch_size"]
            data = dict(self.data)
            for key in ("x", "y", "sample_weight"):
                if data.get(key) is not None:
                    data[key] = keras.tree.map_structure(lambda a: a[start:], data[key])
            segments.append(Segment(data, epoch, epoch + 1))
            epoch += 1
        if epoch < epochs:
            segments.append(Segment(self.data, epoch, epochs))
        return segments


class IteratorSource(DataSource):
    """A `tf.data.Dataset` read through one iterator whose state each backup saves.

    Every epoch reads `steps` batches from an iterator over the dataset
    repeated (or over the dataset itself when `fit` was given
    `steps_per_epoch`, as Keras does); `fit` gets a dataset that pulls one
    batch from that iterator per step, with no prefetching, so the
    iterator's position is always the number of batches trained.
    """

    exact_batches = True

    def __init__(self, data, steps, repeat):
        super().__init__(data, steps)
        self.repeat = repeat
        self.iterator = iter(data["x"].repeat() if repeat else data["x"])

    def _feed(self, steps):
        import tensorflow as tf

        iterator = self.iterator
        feed = tf.data.Dataset.range(steps).map(lambda _: iterator.get_next())
        options = tf.data.Options()
        options.experimental_optimization.inject_prefetch = False
        options.autotune.enabled = False
        return feed.with_options(options)

    def segments(self, epoch, batch, epochs):
        segments = []
        if batch:
            data = dict(self.data, x=self._feed(self.steps - batch), steps_per_epoch=None)
            segments.append(Segment(data, epoch, epoch + 1))
            epoch += 1
        if epoch < epochs:
            data = dict(self.data, x=self._feed(self.steps), steps_per_epoch=None)
            segments.append(Segment(data, epoch, epochs))
        return segments

    def _checkpoint(self):
        import tensorflow as tf

        return tf.train.Checkpoint(iterator=self.iterator)

    def save(self, directory):
        self._checkpoint().write(os.path.join(directory, "data_iterator"))

    def restore(self, directory):
        self._checkpoint().read(os.path.join(directory, "data_iterator")).assert_consumed()


def data_source(data, distribute_strategy=None):
    """The `DataSource` of `fit`'s data.

    Args:
        data: `fit`'s `x`, `y`, `batch_size`, `sample_weight`,
            `steps_per_epoch`, `shuffle` and `validation_split`, as a dict.
        distribute_strategy: The model's `tf.distribute` strategy (TensorFlow),
            or `None`.

    Returns:
        A `DataSource`; `exact_batches` says whether it restarts at any batch,
        and `reason` why not.
    """
    x, steps = data["x"], data.get("steps_per_epoch")
    if hasattr(x, RESTART_ATTRIBUTE):
        if not steps:
            raise ValueError(
                "fit got a restartable pipeline (a keyed or teacher-cache pipeline) "
                "without steps_per_epoch. Pass steps_per_epoch=keyed_steps_per_epoch("
                "num_examples, batch_size): without it Keras takes the whole stream "
                "as one epoch."
            )
        return RestartableSource(data, steps)
    if is_tf_dataset(x):
        return _tf_dataset_source(data, steps, distribute_strategy)
    if _is_arrays(x):
        return _array_source(data, steps)
    return DataSource(
        data,
        steps,
        f"{type(x).__name__} data cannot be started at a given batch. Use "
        "keras_unikd.data.make_keyed_image_pipeline, a tf.data.Dataset (TensorFlow), or "
        "arrays with shuffle=False for exact resumes within an epoch.",
    )


def _is_arrays(x):
    leaves = keras.tree.flatten(x) if x is not None else []
    return bool(leaves) and all(is_array(leaf) for leaf in leaves)


def _tf_dataset_source(data, steps, strategy):
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        reason = (
            f"under {keras.backend.backend()} Keras reads a tf.data.Dataset ahead of the "
            "training steps, so its position cannot be saved; use a keyed pipeline "
            "(keras_unikd.data.make_keyed_image_pipeline) for exact resumes within an epoch."
        )
        return DataSource(data, steps, reason)
    if strategy is not None and strategy is not tf.distribute.get_strategy():
        reason = (
            "under a tf.distribute strategy each replica reads its own iterator, whose "
            "position cannot be saved; use a keyed pipeline for exact resumes within an epoch."
        )
        return DataSource(data, steps, reason)
    cardinality = int(data["x"].cardinality())
    if steps:
        return IteratorSource(data, steps, repeat=False)
    if cardinality > 0:
        return IteratorSource(data, cardinality, repeat=True)
    reason = (
        "the tf.data.Dataset has an unknown or infinite number of batches and fit got no "
        "steps_per_epoch; pass steps_per_epoch (or apply "
        "tf.data.experimental.assert_cardinality) for exact resumes within an epoch."
    )
    return DataSource(data, None, reason)


def _array_source(data, steps):
    if data.get("validation_split"):
        reason = "fit's validation_split changes with the data; pass validation_data instead."
        return DataSource(data, steps, reason)
    if data.get("shuffle", True):
        reason = (
            "fit shuffles in-memory arrays with the process's random state, so a restarted "
            "process would see other batches, even at epoch boundaries. Pass shuffle=False "
            "(with arrays shuffled per epoch by a seeded pipeline) or use "
            "keras_unikd.data.make_keyed_image_pipeline."
        )
        return DataSource(data, steps, reason)
    rows = len(keras.tree.flatten(data["x"])[0])
    data = dict(data, batch_size=data.get("batch_size") or 32)
    return ArraySource(data, steps or math.ceil(rows / data["batch_size"]))
