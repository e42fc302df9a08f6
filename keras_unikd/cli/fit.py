"""The fit that `train-teacher` and `distill` share: callbacks, run folder, results.

A run folder holds

- `backup/`: `keras.callbacks.BackupAndRestore` state, saved every epoch
  (runs from a teacher cache: `keras_unikd.callbacks.StepBackup`, every 10
  minutes too); running the same command again resumes from the last
  finished epoch (from the cache: at the next batch after the last backup);
- `log.csv`: one row per epoch with every loss term, the metrics, the
  validation metrics and `epoch_seconds`;
- `tensorboard/`: TensorBoard logs;
- `best_<model>.keras` (highest `val_accuracy`) and `last_<model>.keras`,
  where `<model>` is `teacher` or `student` (the student alone, without the
  distillation modules); the best is written atomically by
  `keras_unikd.callbacks.StudentCheckpoint`, which keeps its value and epoch
  in `best_<model>.keras.json` and reads them back on resume;
- `results.json`: best and last top-1 (%), seconds per epoch, the preset,
  the run's settings, the backend and the published number of the method.
"""

import contextlib
import csv
import dataclasses
import importlib.util
import json
import os
import sys
import typing


@dataclasses.dataclass
class Run:
    """One training run of a command.

    Attributes:
        preset: The `Preset`.
        name: `"teacher"`, or the method (`"mlkd+ls"`, ...).
        role: `"teacher"` or `"student"`: the network trained and saved.
        run_dir: The run's folder.
        epochs: Epochs to train.
        batch_size: Global batch size.
        steps_per_epoch: Optimizer steps per epoch.
        views: 1, or 2 for two-view training batches.
        published: The published top-1 of this network and method, or `None`.
        info: Further fields of `results.json` (seed, teacher, cache, ...).
    """

    preset: typing.Any
    name: str
    role: str
    run_dir: str
    epochs: int
    batch_size: int
    steps_per_epoch: int
    views: int = 1
    published: float = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def backup_dir(self):
        return os.path.join(self.run_dir, "backup")

    def path(self, name):
        return os.path.join(self.run_dir, name)


def fit_run(
    run,
    build_model,
    train_ds,
    val_ds,
    verbose,
    strategy=None,
    callbacks=(),
    fit_steps=None,
    backup=None,
):
    """Builds, compiles and fits the model of `run`, then writes `results.json`.

    Args:
        run: The `Run`.
        build_model: A function of no argument that builds the model to fit
            (a Distiller, or a bare network); it runs under the strategy's
            scope, then the model is compiled with the preset's recipe for
            `run.role`.
        train_ds: Training data.
        val_ds: Validation data.
        verbose: Keras verbosity.
        strategy: A `tf.distribute` strategy, or `None`.
        callbacks: Callbacks added after the run folder's.
        fit_steps: `fit`'s `steps_per_epoch` (keyed pipelines hold every
            epoch in one stream), or `None`.
        backup: The backup callback of `backup/`; `None`:
            `keras.callbacks.BackupAndRestore` (epoch level).

    Returns:
        The results, as written to `results.json`.
    """
    import keras

    from keras_unikd import presets
    from keras_unikd.callbacks import EpochTimer
    from keras_unikd.callbacks import StudentCheckpoint

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model()
        optimizer = presets.build_optimizer(
            run.preset, run.steps_per_epoch, role=run.role, epochs=run.epochs
        )
        presets.compile_for_training(run.preset, model, optimizer)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1

    os.makedirs(run.run_dir, exist_ok=True)
    network = getattr(model, "student", model)
    best = StudentCheckpoint(run.path(f"best_{run.role}.keras"))
    log_path = run.path("log.csv")
    every = [
        EpochTimer(),  # First: later callbacks see `epoch_seconds`.
        backup or keras.callbacks.BackupAndRestore(run.backup_dir, delete_checkpoint=False),
        best,
        keras.callbacks.CSVLogger(log_path, append=True),
        *_tensorboard(run),
        *callbacks,
    ]
    print(
        f"keras-unikd: {run.name} on {run.preset.name}: {run.epochs} epochs x "
        f"{run.steps_per_epoch} steps (batch {run.batch_size}, {run.views} "
        f"view{'s' if run.views > 1 else ''}), backend {keras.backend.backend()}, "
        f"{replicas} replica(s); writing {run.run_dir}",
        flush=True,
    )
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=run.epochs,
        steps_per_epoch=fit_steps,
        callbacks=every,
        verbose=verbose,
        shuffle=False,  # The tf.data pipeline shuffles.
    )
    last_path = run.path(f"last_{run.role}.keras")
    network.save(last_path)
    record = dict(
        run.info,
        preset=run.preset.name,
        method=run.name,
        views=run.views,
        logit_standardization=run.name.endswith("+ls"),
        dataset=run.preset.dataset,
        teacher_model=run.preset.teacher,
        student_model=run.preset.student,
        epochs=run.epochs,
        batch_size=run.batch_size,
        steps_per_epoch=run.steps_per_epoch,
        backend=keras.backend.backend(),
        replicas=replicas,
        best_model=best.filepath,
        last_model=last_path,
        log=log_path,
    )
    results = summarise(_read_log(log_path), _read_json(best.state_path), record, run.published)
    results["preset_config"] = run.preset.to_dict()
    with open(run.path("results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(
        f"keras-unikd: best top-1 {results['best_top1']}% (epoch "
        f"{results['best_epoch']}), last {results['last_top1']}%, "
        f"{results['seconds_per_epoch'] or 0:.1f} s/epoch; published "
        f"{results['published_top1'] or 'n/a'}. Results: {run.path('results.json')}",
        flush=True,
    )
    return results


def _tensorboard(run):
    import keras

    if importlib.util.find_spec("tensorboard") is None:
        print(
            "keras-unikd: warning: TensorBoard is not installed, so no TensorBoard "
            "logs are written (pip install tensorboard).",
            file=sys.stderr,
        )
        return []
    return [keras.callbacks.TensorBoard(run.path("tensorboard"), profile_batch=0)]


def _read_log(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def summarise(log_rows, best, run_info, published):
    """The content of `results.json`.

    The best top-1 and its epoch are those of the saved best network
    (`best`: its checkpoint's record, `{"best": val_accuracy, "epoch": ...}`,
    or `None` when none was saved); the other figures come from the log.
    """

    def top1(accuracy):
        return round(100.0 * float(accuracy), 4)

    rows = [row for row in log_rows if row.get("val_accuracy") not in (None, "")]
    seconds = [float(row["epoch_seconds"]) for row in log_rows if row.get("epoch_seconds")]
    steady = seconds[1:] or seconds
    return {
        **run_info,
        "epochs_completed": len(log_rows),
        "best_top1": top1(best["best"]) if best else None,
        "best_epoch": best["epoch"] if best else None,
        "last_top1": top1(rows[-1]["val_accuracy"]) if rows else None,
        "seconds_per_epoch": sum(steady) / len(steady) if steady else None,
        "first_epoch_seconds": seconds[0] if seconds else None,
        "published_top1": published,
    }
