"""Callbacks for distillation runs."""

import json
import math
import os
import time
import warnings

import keras
import numpy as np

from keras_unikd import atomic_files
from keras_unikd.backup import StepBackup
from keras_unikd.validation import check_choice

__all__ = [
    "DistillationWatch",
    "EpochTimer",
    "NonFiniteLossGuard",
    "StepBackup",
    "StudentCheckpoint",
    "TrainingPlan",
]


class _Callback(keras.callbacks.Callback):
    """A callback whose `get_config()` holds its constructor's arguments."""

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_unikd")
class TrainingPlan(_Callback):
    """Tells a `keras_unikd.Distiller` how long its epochs and its run are.

    The Distiller's warm-ups read the epoch from its own step counter and its
    `steps_per_epoch`, and `warmup_epochs="auto"` warm-ups the length of the
    run. At the start of `fit` this callback sets the Distiller's
    `planned_epochs` from `fit`'s `epochs` and `steps_per_epoch` from the
    data (or, when the data cannot say, counts the first epoch's batches),
    and warns once for every term whose warm-up lasts longer than the run.
    When a fresh Distiller starts at `initial_epoch > 0`, the step counter
    is moved to that epoch's first step. `Distiller.fit` adds this callback
    itself.

    Args:
        epochs: The run's planned number of epochs, when it differs from
            the `epochs` of the `fit` call (`Distiller.fit` passes its own:
            a run resumed by `StepBackup` can be split into two `fit` calls);
            `None`: `fit`'s.

    Example:

    >>> plan = TrainingPlan()
    >>> isinstance(plan, keras.callbacks.Callback)
    True
    """

    def __init__(self, epochs=None):
        super().__init__()
        self.epochs = epochs

    def on_train_begin(self, logs=None):
        steps = self.params.get("steps")
        self._count_batches = not steps
        if steps:
            self.model.steps_per_epoch.assign(float(steps))
        epochs = self.epochs or self.params.get("epochs") or 1
        self.model.planned_epochs.assign(float(epochs))
        self.model.warn_about_long_warmups(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self._batches = 0
        steps = float(keras.ops.convert_to_numpy(self.model.steps_per_epoch))
        first_step = epoch * steps
        if first_step > float(keras.ops.convert_to_numpy(self.model.training_step)):
            self.model.training_step.assign(first_step)

    def on_train_batch_end(self, batch, logs=None):
        self._batches = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        if self._count_batches and self._batches:
            self.model.steps_per_epoch.assign(float(self._batches))
            self._count_batches = False

    def get_config(self):
        return {"epochs": self.epochs}


@keras.saving.register_keras_serializable(package="keras_unikd")
class EpochTimer(_Callback):
    """Adds `epoch_seconds`, the wall-clock time of each epoch, to the logs.

    The time covers training and validation. Put it first in the callback
    list, so that later callbacks (`CSVLogger`, checkpoints) see the figure.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> history = model.fit(
    ...     np.zeros((4, 2)), np.zeros((4, 1)), callbacks=[EpochTimer()], verbose=0
    ... )
    >>> history.history["epoch_seconds"][0] > 0
    True
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="keras_unikd")
class DistillationWatch(_Callback):
    """Warns once when distillation makes the student's own cross-entropy worse.

    It reads the student's cross-entropy on the training batches: each
    epoch's mean of the `CrossEntropy` term's loss, divided by its weight
    (`C_e` for epoch `e`, counted from 1). After the warm-up, at the end of
    every epoch `e` past the longest warm-up of the terms (`W` epochs; past
    epoch 1 without one), it warns once when

    - `C_e > rise * C_1`: the cross-entropy stays far above where the first
      epoch left it (`rise=1.5`), or
    - `C_e >= chance * ln(K) > C_1`: it rose to the level of guessing among
      the `K` classes (`chance=0.9`; `ln(K)` is the cross-entropy of a
      uniform prediction). A student still at chance level after the first
      epoch is slow to learn, not made worse: only the first rule applies.

    The warning names the term whose weighted loss dominates the epoch's
    total, and the setting of that term to lower (`tuning_hint`). It never
    stops training. `Distiller.fit` adds one unless `callbacks` holds one; a
    Distiller without a `CrossEntropy` term of weight > 0 is not watched.

    Args:
        rise: How many times the first epoch's cross-entropy counts as far
            above it.
        chance: The fraction of `ln(K)` that counts as guessing.

    Example:

    >>> watch = DistillationWatch(rise=2.0)
    >>> watch.get_config()
    {'rise': 2.0, 'chance': 0.9}
    """

    def __init__(self, rise=1.5, chance=0.9):
        super().__init__()
        if not rise > 1 or not 0 < chance <= 1:
            raise ValueError(
                f"DistillationWatch needs rise > 1 and 0 < chance <= 1; got rise={rise!r}, "
                f"chance={chance!r}."
            )
        self.rise = rise
        self.chance = chance

    def on_train_begin(self, logs=None):
        from keras_unikd.terms import CrossEntropy

        self._warned = False
        self._first = None
        entropies = [
            term
            for term in getattr(self.model, "terms", ())
            if isinstance(term, CrossEntropy) and term.weight > 0
        ]
        self._ce = entropies[0] if entropies else None

    def _warmup(self):
        planned = float(keras.ops.convert_to_numpy(self.model.planned_epochs))
        lengths = [term.warmup_length(planned) for term in self.model.terms if term.warmup_epochs]
        return max([1.0] + [float(keras.ops.convert_to_numpy(length)) for length in lengths])

    def on_epoch_end(self, epoch, logs=None):
        if self._ce is None or self._warned or not logs:
            return
        name = self._ce.loss_names[0]
        if name not in logs:
            return
        entropy = float(logs[name]) / (self._ce.weight * (2 if self._ce.views == 2 else 1))
        if self._first is None:
            self._first = entropy
        if epoch + 1 <= self._warmup():
            return
        chance = math.log(self.model.num_classes)
        rose_to_chance = entropy >= self.chance * chance > self._first
        if entropy > self.rise * self._first or rose_to_chance:
            self._warned = True
            warnings.warn(self._message(epoch, entropy, chance, logs), stacklevel=2)

    def _message(self, epoch, entropy, chance, logs):
        term, loss = self._dominant(logs)
        where = (
            f"Term {term.name!r} dominates the total: {loss} is {float(logs[loss]):.4g} of "
            f"{float(logs['loss']):.4g}. Lower {term.tuning_hint(loss)}."
            if term is not None
            else "No other term's loss is logged."
        )
        return (
            f"Epoch {epoch + 1}: distillation is making the student worse: its "
            f"cross-entropy on the training batches is {entropy:.4f}, against {self._first:.4f} "
            f"after the first epoch and {chance:.4f} for guessing among "
            f"{self.model.num_classes} classes. {where} (keras_unikd.callbacks."
            "DistillationWatch warns once; training goes on.)"
        )

    def _dominant(self, logs):
        """`(term, loss name)` of the largest weighted loss other than the cross-entropy's."""
        candidates = [
            (float(logs[loss]), term, loss)
            for term in self.model.terms
            if term is not self._ce
            for loss in term.loss_names
            if loss in logs and math.isfinite(float(logs[loss]))
        ]
        if not candidates:
            return None, None
        _, term, loss = max(candidates, key=lambda candidate: candidate[0])
        return term, loss

    def get_config(self):
        return {"rise": self.rise, "chance": self.chance}


@keras.saving.register_keras_serializable(package="keras_unikd")
class NonFiniteLossGuard(_Callback):
    """Stops a Distiller's training at the first non-finite value, naming why.

    After every training batch (and on the epoch's logs, which under
    `tf.distribute` aggregate all replicas) the guard looks at the running
    means of the Distiller's loss terms, in `loss_term_names` order:

    - a term that is NaN or Inf: the message names it first, then the
      other terms that went non-finite in the same batch (NaN/Inf inputs
      make every term non-finite; a broken teacher leaves `ce_loss` finite);
    - `loss` NaN while every term is finite: the Distiller's mark of a batch
      with labels outside `[0, num_classes)` or with a fractional part;
    - `val_loss` non-finite while training is fine: a last step that made the
      student's weights non-finite, or else bad validation data.

    At the end of training it also checks that the student's weights are
    finite (the losses of the very last step are logged before its update).

    `Distiller.fit` adds a guard unless `callbacks` holds one. Like Keras's
    `TerminateOnNaN`, it reads the logs after every batch, which makes the
    JAX backend wait for each step (TensorFlow does so anyway).

    Args:
        raise_error: If `False` (default, like `TerminateOnNaN`), print the
            message and stop training (`model.stop_training`); `fit` returns
            the `History` so far. If `True`, raise instead: `ValueError` for
            labels and validation data, `RuntimeError` for non-finite losses
            or weights. Raising skips the other callbacks' `on_train_end`,
            so a `BackupAndRestore` backup from before the failure is kept,
            and a script stops before it saves a broken student.

    Example:

    ```python
    distiller.fit(ds, epochs=10, callbacks=[NonFiniteLossGuard(raise_error=True)])
    ```
    """

    def __init__(self, raise_error=False):
        super().__init__()
        self.raise_error = raise_error
        self._epoch = 0
        self._reported = False

    def on_train_begin(self, logs=None):
        self._reported = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(self._diagnose_logs, logs, f"Epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(self._diagnose_logs, logs, f"End of epoch {epoch + 1}")

    def on_train_end(self, logs=None):
        self._check(self._diagnose_weights, logs, "End of training")

    def _check(self, diagnose, logs, where):
        error = None if self._reported else diagnose(logs or {}, where)
        if error is None:
            return
        self._reported = True
        if self.raise_error:
            raise error
        print(error, flush=True)
        self.model.stop_training = True

    def _diagnose_logs(self, logs, where):
        """The error that describes `logs`, or `None` when they are finite."""
        terms = [name for name in self.model.loss_term_names if name in logs]
        bad = [name for name in terms if not math.isfinite(logs[name])]
        if bad:
            others = ", ".join(bad[1:])
            others = f" (also non-finite in this batch: {others})" if others else ""
            return RuntimeError(
                f"{where}: the loss term {bad[0]!r} became non-finite first "
                f"({logs[bad[0]]}){others}; training stopped. Look for NaN or "
                "Inf in the input batches (tf.debugging.check_numerics in the "
                "data pipeline finds them), a teacher whose weights or outputs "
                "are not finite (check teacher.predict on a batch), or a "
                "learning rate that is too high; under mixed_float16, try "
                "mixed_bfloat16."
            )
        classes = self.model.num_classes
        if "loss" in logs and not math.isfinite(logs["loss"]):
            return ValueError(
                f"{where}: a batch has labels outside [0, {classes}) or with "
                "a fractional part (the Distiller sets the loss of such a "
                "batch to NaN; every loss term stayed finite); training "
                "stopped. Labels must be sparse integer class ids "
                f"0..{classes - 1}: check the label pipeline (1-based labels? "
                "a different number of classes? soft or smoothed labels?)."
            )
        if "val_loss" in logs and not math.isfinite(logs["val_loss"]):
            return self._diagnose_weights(logs, where) or ValueError(
                f"{where}: val_loss is {logs['val_loss']} while the training "
                "losses and the student's weights are finite: the validation "
                f"data has labels outside [0, {classes}) or with a fractional "
                "part, or NaN/Inf inputs. "
                "Check validation_data."
            )
        return None

    def _diagnose_weights(self, logs, where):
        """An error when the student's weights are not all finite."""
        weights = [keras.ops.convert_to_numpy(weight) for weight in self.model.student.weights]
        if all(np.isfinite(weight).all() for weight in weights):
            return None
        return RuntimeError(
            f"{where}: the student's weights are not finite: a training step "
            "diverged (its own losses, logged before the update, were still "
            "finite); training stopped. Lower the learning rate or the loss "
            "weights, or clip the gradients (optimizer clipnorm=...)."
        )

    def get_config(self):
        return {"raise_error": self.raise_error}


@keras.saving.register_keras_serializable(package="keras_unikd")
class StudentCheckpoint(_Callback):
    """Saves the Distiller's student alone as a `.keras` file, atomically.

    At the end of each epoch the student (`distiller.student`, without the
    teacher, the aggregators or the heads; a model without a `student`, such
    as a teacher trained on its own, is saved itself) is saved to `filepath`; with
    `save_best_only`, only when `monitor` improves. The file is written under
    a temporary name in the same directory and renamed over `filepath`, so a
    crash never leaves a half-written checkpoint.

    With `save_best_only`, the best value is kept beside the checkpoint in
    `filepath + ".json"` (written the same way). A run that starts at epoch
    0 starts afresh; a run resumed at a later epoch (by
    `keras.callbacks.BackupAndRestore` or `initial_epoch`) reads the best
    value back, so it replaces the checkpoint only with a better student.

    In multi-worker training, give the callback to one worker (the chief)
    only, or a different `filepath` to each.

    Args:
        filepath: Path of the `.keras` file.
        monitor: Name of the logged metric to watch, e.g. `"val_accuracy"`
            (needs `validation_data` in every epoch) or `"val_loss"`.
        mode: `"max"` or `"min"`: whether a larger or a smaller value is
            better.
        save_best_only: If `False`, save after every epoch.

    Raises:
        ValueError: for a `filepath` not ending in `.keras`, an unknown
            `mode`, or (at the end of an epoch) a `monitor` missing from
            the logs.

    Example:

    ```python
    checkpoint = keras_unikd.callbacks.StudentCheckpoint(
        "runs/best_student.keras", monitor="val_accuracy", mode="max"
    )
    distiller.fit(train_ds, validation_data=val_ds, epochs=240,
                  callbacks=[checkpoint])
    student = keras.models.load_model("runs/best_student.keras")
    ```
    """

    def __init__(self, filepath, monitor="val_accuracy", mode="max", save_best_only=True):
        super().__init__()
        filepath = os.fspath(filepath)
        if not filepath.endswith(".keras"):
            raise ValueError(
                f"StudentCheckpoint saves a .keras file; got filepath="
                f"{filepath!r}. Use a path ending in '.keras'."
            )
        check_choice("mode", mode, ("max", "min"))
        self.filepath = filepath
        self.monitor = monitor
        self.mode = mode
        self.save_best_only = save_best_only
        self.best = None
        self._starting = True

    @property
    def state_path(self):
        """Where the best monitored value is kept."""
        return self.filepath + ".json"

    def on_train_begin(self, logs=None):
        self.best = None
        self._starting = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._starting and epoch > 0:
            self.best = self._stored_best()
        self._starting = False

    def on_epoch_end(self, epoch, logs=None):
        if self.save_best_only:
            value = self._monitored_value(logs or {})
            if not self._improves(value):
                return
            self.best = value
        network = getattr(self.model, "student", self.model)
        atomic_files.atomic_write(self.filepath, network.save)
        if self.save_best_only:
            state = {
                "monitor": self.monitor,
                "mode": self.mode,
                "best": self.best,
                "epoch": epoch + 1,
            }
            atomic_files.write_json(self.state_path, state)

    def _monitored_value(self, logs):
        if self.monitor not in logs:
            raise ValueError(
                f"StudentCheckpoint monitors {self.monitor!r}, which is not in "
                f"the logs of this epoch ({sorted(logs)}). Pass "
                "validation_data to fit (and validation_freq=1) for a 'val_' "
                "metric, compile the metric, or choose another monitor."
            )
        return float(logs[self.monitor])

    def _improves(self, value):
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _stored_best(self):
        if not os.path.exists(self.state_path):
            return None
        with open(self.state_path) as file:
            state = json.load(file)
        if (state["monitor"], state["mode"]) != (self.monitor, self.mode):
            return None
        return state["best"]

    def get_config(self):
        return {
            "filepath": self.filepath,
            "monitor": self.monitor,
            "mode": self.mode,
            "save_best_only": self.save_best_only,
        }
