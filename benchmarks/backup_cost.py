"""Milliseconds per step-level backup (`StepBackup`) against milliseconds per training step.

The CIFAR-100 ResNet32x4 -> ResNet8x4 UniKD Distiller of the presets
(`cifar100_resnet32x4_resnet8x4`, random weights) trains on random 32x32x3
batches of 64 (in-memory arrays, `shuffle=False`). One `fit` backs up after
every step; the time of each backup (gathering every variable, writing it,
flushing it to disk and renaming it) is measured inside the callback, and
the step time from a second `fit` without backups, in the same process.
Also recorded: the backup's size on disk, and how many steps between backups
keep the overhead at 1% of the training time.

    python benchmarks/backup_cost.py [--steps 12] [--output benchmarks/results/backup_cost.json]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_unikd  # noqa: E402
from keras_unikd import presets  # noqa: E402
from keras_unikd.experiments import results as results_io  # noqa: E402

PRESET = "cifar100_resnet32x4_resnet8x4"
BATCH = 64


class TimedBackup(keras_unikd.callbacks.StepBackup):
    """A `StepBackup` that records how long each backup takes."""

    seconds = []

    def _save(self, epoch, batch):
        start = time.perf_counter()
        super()._save(epoch, batch)
        self.seconds.append(time.perf_counter() - start)


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def distiller():
    keras.utils.set_random_seed(0)
    teacher, student = presets.build_models(PRESET)
    model = presets.build_distiller(PRESET, teacher, student, "unikd", seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"])
    return model


def directory_bytes(path):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def measure(steps):
    rng = np.random.default_rng(0)
    x = rng.random((steps * BATCH, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 100, size=(steps * BATCH,)).astype("int32")
    model = distiller()
    data = dict(x=x, y=y, batch_size=BATCH, shuffle=False, verbose=0)
    timer = StepTimer()
    model.fit(**data, epochs=2, callbacks=[timer])  # the first epoch compiles
    step_ms = 1000 * statistics.median(timer.seconds[steps:])
    with tempfile.TemporaryDirectory() as directory:
        backup = TimedBackup(
            directory, save_every_steps=1, save_every_minutes=None, delete_on_finish=False
        )
        model.fit(**data, epochs=1, callbacks=[backup])
        size = directory_bytes(os.path.join(directory, os.listdir(directory)[-1]))
    backup_ms = 1000 * statistics.median(TimedBackup.seconds)
    return {
        "preset": PRESET,
        "batch_size": BATCH,
        "variables": len(keras_unikd.backup.state_variables(model)),
        "backup_megabytes": round(size / 2**20, 2),
        "backups_timed": len(TimedBackup.seconds),
        "backup_ms_median": round(backup_ms, 1),
        "backup_ms_max": round(1000 * max(TimedBackup.seconds), 1),
        "train_step_ms_median": round(step_ms, 1),
        "steps_for_1_percent_overhead": int(np.ceil(100 * backup_ms / step_ms)),
    }


def markdown(result, environment):
    return "\n".join(
        [
            "# Cost of a step-level backup (StepBackup)",
            "",
            f"{environment['date']}, {environment['machine']}, {environment['backend']}, "
            f"Keras {environment['keras_version']}.",
            "",
            "| Distiller | variables | backup size | ms per backup (median, max) "
            "| ms per training step | steps between backups for 1% overhead |",
            "|---|---|---|---|---|---|",
            f"| {result['preset']} UniKD, batch {result['batch_size']} | {result['variables']} "
            f"| {result['backup_megabytes']} MiB | {result['backup_ms_median']}, "
            f"{result['backup_ms_max']} | {result['train_step_ms_median']} "
            f"| {result['steps_for_1_percent_overhead']} |",
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--output", default="benchmarks/results/backup_cost.json")
    args = parser.parse_args()
    result = measure(args.steps)
    environment = results_io.environment()
    text = markdown(result, environment)
    print(text)
    results_io.write({"environment": environment, "result": result}, args.output, text)


if __name__ == "__main__":
    main()
