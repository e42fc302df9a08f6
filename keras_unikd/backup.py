"""Step-level backups of a Distiller's whole training state, resumed exactly.

`StepBackup` is the callback; `fit_with_backup` is what `Distiller.fit` runs
when one is among its callbacks: it finds the last complete backup, makes
the data start at the backup's batch (`keras_unikd.data.resume`), and runs
`fit` in at most two parts (the rest of the interrupted epoch, then the
following epochs), since a Keras `fit` has one number of steps per epoch.
"""

import json
import os
import re
import time
import warnings

import keras
import numpy as np

from keras_unikd import atomic_files
from keras_unikd.data.resume import data_source

FORMAT_VERSION = 1
STATE_FILE = "state.json"
ARRAYS_FILE = "variables.npz"
# The arguments of `fit` that say which batches it reads.
DATA_ARGUMENTS = ("sample_weight", "steps_per_epoch", "shuffle", "validation_split")
_BACKUP_NAME = re.compile(r"^epoch-\d{6}-batch-\d{8}$")


def state_variables(model, metrics=True):
    """Every variable whose value the run's future depends on, in a fixed order.

    The model's variables (weights, non-trainable state such as batch-norm
    statistics and step counters, and the random seed states of its layers),
    the optimizer's and, with `metrics`, the metrics' (the running sums of
    the epoch so far; last).
    """
    variables, seen = [], set()
    optimizer = getattr(model, "optimizer", None)
    groups = [model.variables, optimizer.variables if optimizer else []]
    for group in groups + ([model.metrics_variables] if metrics else []):
        for variable in group:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    return variables


def backup_name(epoch, batch):
    """The directory name of the backup at batch `batch` of `epoch` (they sort in time order)."""
    return f"epoch-{epoch:06d}-batch-{batch:08d}"


class BackupPosition:
    """Where a backup resumes: the next batch `batch` of epoch `epoch` (from 0)."""

    def __init__(self, epoch, batch, path=None, steps_per_epoch=None):
        self.epoch, self.batch, self.path = int(epoch), int(batch), path
        self.steps_per_epoch = steps_per_epoch

    def __repr__(self):
        return f"BackupPosition(epoch={self.epoch}, batch={self.batch})"


@keras.saving.register_keras_serializable(package="keras_unikd")
class StepBackup(keras.callbacks.Callback):
    """Backs up the whole training state every N steps or M minutes; resumes exactly.

    The drop-in replacement for `keras.callbacks.BackupAndRestore` in
    `keras_unikd.Distiller.fit`, which resumes at the next *batch* rather
    than at the start of the interrupted epoch. A backup holds every
    variable of the Distiller (student, teacher, aggregators and heads, the
    step counters and the layers' random seed states), the optimizer's
    state, the metrics' running sums of the epoch so far, the history of the
    finished epochs, and the data's position: the next batch to train, and
    for a `tf.data` pipeline under TensorFlow its iterator's checkpoint.
    Running the same script again after a crash continues from the last
    complete backup and ends with the same student, optimizer state and
    history, bit for bit, as a run that was never interrupted (given
    deterministic kernels and seeded data; see the robustness guide).

    Backups are taken every `save_every_steps` steps and/or every
    `save_every_minutes` minutes, and at the end of every epoch. Which data
    resumes within an epoch: the keyed and teacher-cache pipelines, any
    dataset marked with `keras_unikd.data.resumable`, a `tf.data.Dataset`
    under TensorFlow without a distribution strategy, and arrays with
    `shuffle=False`. For other data the callback warns once and backs up at
    epoch ends only (an epoch-exact resume), saying why.

    Each backup is a directory `epoch-<E>-batch-<B>` (the position of the
    next batch to train, both from 0) written under a temporary name,
    flushed to disk and renamed, so a crash while writing leaves the
    previous complete backup; the last `keep` complete backups are kept (a
    damaged latest one falls back to the one before, with a warning). A full
    disk, a read-only or a vanished directory stops training with an
    `OSError` that names the path; the last complete backup stays.

    Args:
        directory: The backups' directory (created if missing). In
            multi-worker training, give each worker its own.
        save_every_steps: Back up every this many training steps, or `None`.
        save_every_minutes: Back up when this many minutes have passed since
            the last backup (checked after each step), or `None`.
        keep: How many complete backups to keep (at least 1).
        delete_on_finish: Whether to delete the backups once all epochs
            are trained (not when training stops early).

    Example:

    ```python
    backup = keras_unikd.callbacks.StepBackup("runs/backup", save_every_minutes=10)
    steps = keras_unikd.data.keyed_steps_per_epoch(len(x), 64)
    train = keras_unikd.data.make_keyed_image_pipeline(x, y, 64, seed=0, epochs=240)
    distiller.fit(train, steps_per_epoch=steps, epochs=240, callbacks=[backup])
    # After a preemption, the same two lines continue from the last backup.
    ```
    """

    def __init__(
        self,
        directory,
        save_every_steps=None,
        save_every_minutes=10.0,
        keep=2,
        delete_on_finish=True,
    ):
        super().__init__()
        from keras_unikd.validation import check_positive
        from keras_unikd.validation import check_positive_int

        fn = "StepBackup"
        self.directory = os.fspath(directory)
        if save_every_steps is not None:
            save_every_steps = check_positive_int("save_every_steps", save_every_steps, fn=fn)
        if save_every_minutes is not None:
            save_every_minutes = check_positive("save_every_minutes", save_every_minutes, fn=fn)
        self.save_every_steps = save_every_steps
        self.save_every_minutes = save_every_minutes
        self.keep = check_positive_int("keep", keep, fn=fn)
        self.delete_on_finish = bool(delete_on_finish)
        self._run = None

    def latest(self):
        """The last complete backup's `BackupPosition` (`None` when there is none)."""
        for path in reversed(self._backup_paths()):
            try:
                with open(os.path.join(path, STATE_FILE)) as file:
                    state = json.load(file)
            except (OSError, ValueError) as error:
                warnings.warn(
                    f"StepBackup: the backup {path!r} cannot be read ({error}); "
                    "using the one before it.",
                    stacklevel=2,
                )
                continue
            if state.get("format") != FORMAT_VERSION:
                raise ValueError(
                    f"The backup {path!r} has format {state.get('format')!r}, not "
                    f"{FORMAT_VERSION}: it was written by another keras_unikd version. Resume "
                    "it with that version, or give StepBackup a new directory."
                )
            return BackupPosition(state["epoch"], state["batch"], path, state["steps_per_epoch"])
        return None

    # The run, which `fit_with_backup` starts and splits into parts of `fit`.

    def _begin_run(self, source, start, epochs):
        """Starts a run (both parts of a split `fit`) at `start` (a `BackupPosition` or `None`)."""
        self._run = _Run(source, start, epochs)
        if start is not None:
            _check_steps(start, source.steps)
            source.restore(start.path)
        if not source.exact_batches and (self.save_every_steps or self.save_every_minutes):
            warnings.warn(
                "StepBackup backs up at epoch ends only for this data, and a resume "
                f"restarts the interrupted epoch: {source.reason}",
                stacklevel=3,
            )

    def _begin_part(self, epoch, batch, last):
        """The next `fit` starts at batch `batch` of `epoch`; `last`: it is the run's last part."""
        self._run.offsets = {epoch: batch}
        self._run.last_part = last

    def _history(self):
        """The run's full history: `(epochs, {metric: values})`, backed-up epochs included."""
        return list(self._run.epochs_done), {k: list(v) for k, v in self._run.logs.items()}

    # Keras callback hooks.

    def on_train_begin(self, logs=None):
        if self._run is None:
            raise ValueError(
                "StepBackup resumes runs through keras_unikd.Distiller.fit, which makes the "
                "data start at the backed-up batch. For another keras.Model use "
                "keras.callbacks.BackupAndRestore."
            )
        try:
            os.makedirs(self.directory, exist_ok=True)
            atomic_files.remove_temporaries(self.directory)
        except OSError as error:
            raise self._error(error, self.directory) from error

    def on_epoch_begin(self, epoch, logs=None):
        run = self._run
        run.epoch, run.batch = epoch, run.offsets.get(epoch, 0)
        if run.pending is not None:
            self._restore(run.pending)
            run.pending = None

    def on_train_batch_end(self, batch, logs=None):
        run = self._run
        done = batch + 1 + run.offsets.get(run.epoch, 0)  # counts steps_per_execution > 1
        run.steps_since += done - run.batch
        run.batch = done
        if run.source.exact_batches and run.batch < (run.source.steps or 0) and self._due(run):
            self._save(run.epoch, run.batch)

    def on_epoch_end(self, epoch, logs=None):
        run = self._run
        run.epochs_done.append(epoch)
        for key, value in (logs or {}).items():
            run.logs.setdefault(key, [None] * (len(run.epochs_done) - 1)).append(_plain(value))
        run.offsets.pop(epoch, None)
        self._save(epoch + 1, 0)

    def on_train_end(self, logs=None):
        run = self._run
        finished = run.epochs_done and run.epochs_done[-1] == run.epochs - 1
        if finished and self.delete_on_finish and run.last_part:
            for path in self._backup_paths():
                atomic_files.remove_quietly(path)
            if os.path.isdir(self.directory) and not os.listdir(self.directory):
                os.rmdir(self.directory)

    # Saving and restoring.

    def _due(self, run):
        if self.save_every_steps and run.steps_since >= self.save_every_steps:
            return True
        minutes = (time.monotonic() - run.saved_at) / 60
        return bool(self.save_every_minutes) and minutes >= self.save_every_minutes

    def _save(self, epoch, batch):
        run = self._run
        variables = state_variables(self.model)
        values = [keras.ops.convert_to_numpy(v) for v in variables]
        state = {
            "format": FORMAT_VERSION,
            "epoch": epoch,
            "batch": batch,
            "steps_per_epoch": run.source.steps,
            "epochs_done": run.epochs_done,
            "logs": run.logs,
            "variables": [[v.path, list(np.shape(a))] for v, a in zip(variables, values)],
            "metrics_start": len(state_variables(self.model, metrics=False)),
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
        }
        path = os.path.join(self.directory, backup_name(epoch, batch))

        def write(directory):
            with open(os.path.join(directory, ARRAYS_FILE), "wb") as file:
                np.savez(file, *values)
            run.source.save(directory)
            with open(os.path.join(directory, STATE_FILE), "w") as file:
                json.dump(state, file)

        try:
            if os.path.exists(path):  # a damaged backup that the resume fell back past
                atomic_files.remove_quietly(path)
            atomic_files.atomic_directory(path, write)
        except OSError as error:
            raise self._error(error, path) from error
        run.steps_since, run.saved_at = 0, time.monotonic()
        for old in self._backup_paths()[: -self.keep]:
            atomic_files.remove_quietly(old)

    def _restore(self, position):
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        with open(os.path.join(position.path, STATE_FILE)) as file:
            state = json.load(file)
        with np.load(os.path.join(position.path, ARRAYS_FILE)) as arrays:
            values = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        if position.batch:
            variables = state_variables(model)
        else:  # a new epoch: its metrics start from Keras's reset
            variables = state_variables(model, metrics=False)
            values = values[: state["metrics_start"]]
        _check_shapes(variables, values, position.path)
        for variable, value in zip(variables, values):
            variable.assign(value)
        # The plan is this run's: `fit` may have been given more epochs since.
        model.planned_epochs.assign(float(self._run.epochs))
        self._run.epochs_done = list(state["epochs_done"])
        self._run.logs = {key: list(value) for key, value in state["logs"].items()}

    def _backup_paths(self):
        if not os.path.isdir(self.directory):
            return []
        names = sorted(name for name in os.listdir(self.directory) if _BACKUP_NAME.match(name))
        return [os.path.join(self.directory, name) for name in names]

    def _error(self, error, path):
        kept = self._backup_paths()
        remedy = (
            f"Training stopped; the last complete backup {kept[-1]!r} is kept."
            if kept
            else "Training stopped."
        )
        return atomic_files.storage_error(
            error,
            path,
            "StepBackup could not write its backup",
            f"{remedy} Free space, or give StepBackup a writable directory, and run again.",
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def get_config(self):
        return {
            "directory": self.directory,
            "save_every_steps": self.save_every_steps,
            "save_every_minutes": self.save_every_minutes,
            "keep": self.keep,
            "delete_on_finish": self.delete_on_finish,
        }


class _Run:
    """The state of one run across the parts of a split `fit`."""

    def __init__(self, source, start, epochs):
        self.source, self.epochs = source, epochs
        self.pending = start
        self.epochs_done, self.logs = [], {}
        self.offsets = {}  # epoch: the batch at which the current `fit` starts it
        self.epoch = self.batch = 0
        self.steps_since, self.saved_at = 0, time.monotonic()
        self.last_part = True


def _plain(value):
    value = keras.ops.convert_to_numpy(value) if not isinstance(value, (int, float)) else value
    return float(value)


def _check_steps(start, steps):
    if start.batch and start.steps_per_epoch and steps and start.steps_per_epoch != steps:
        raise ValueError(
            f"The backup {start.path!r} was taken with {start.steps_per_epoch} steps per "
            f"epoch, and this run's data has {steps}: its batch {start.batch} would be "
            "another batch. Keep the batch size and data of the run, or give StepBackup "
            "a new directory."
        )


def _check_shapes(variables, values, path):
    shapes = [tuple(v.shape) for v in variables]
    saved = [tuple(np.shape(a)) for a in values]
    if shapes != saved:
        raise ValueError(
            f"The backup {path!r} holds the state of another model or optimizer "
            f"({len(saved)} variables, this run has {len(shapes)}). Give StepBackup a new "
            "directory, or build the same Distiller and compile it the same way."
        )


def fit_with_backup(model, fit, backup, data, epochs, **kwargs):
    """Runs `fit` with `backup`, resumed from its last complete backup.

    Args:
        model: The Distiller (its distribution strategy is read).
        fit: `keras.Model.fit` bound to `model`.
        backup: The `StepBackup` among `kwargs["callbacks"]`.
        data: `fit`'s `x`, `y`, `batch_size`, `sample_weight`,
            `steps_per_epoch`, `shuffle` and `validation_split`, as a dict.
        epochs: The run's number of epochs.
        **kwargs: `fit`'s other arguments (`callbacks`, `validation_data`, ...).

    Returns:
        The last part's `History`, holding the whole run's history.
    """
    source = data_source(data, getattr(model, "distribute_strategy", None))
    start = backup.latest()
    initial_epoch = kwargs.pop("initial_epoch", 0)
    begin = (start.epoch, start.batch) if start is not None else (initial_epoch, 0)
    backup._begin_run(source, start, epochs)
    segments = source.segments(*begin, epochs)
    if not segments and start is not None:  # the backup is of the run's end
        backup.set_model(model)
        backup.on_epoch_begin(start.epoch)
    history = None
    for index, segment in enumerate(segments):
        first_batch = begin[1] if index == 0 else 0
        backup._begin_part(segment.initial_epoch, first_batch, last=index == len(segments) - 1)
        history = fit(
            **segment.data,
            epochs=segment.epochs,
            initial_epoch=segment.initial_epoch,
            **kwargs,
        )
        if model.stop_training:
            break
    if history is None:
        history = keras.callbacks.History()
        history.set_model(model)
    history.epoch, history.history = backup._history()
    return history
