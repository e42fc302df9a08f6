"""Trains small distillations with `StepBackup`, to be killed and resumed.

    python -m workers.step_backup_run DIR [--kill JOB STEP] [--pause-write JOB NAME]

Runs the jobs of `jobs()` one after the other, each a seeded distillation
(CE, DKD with a warm-up, UniKD features with the sampled distribution loss,
so the heads' noise state matters; a `StudentCheckpoint`) of the tiny test networks
on 40 random images, 3 epochs of 5 batches, backed up every 2 steps in
`DIR/<job>/backup`. A job that finished wrote `DIR/<job>/result.npz` and is
skipped, so running the same command again after a kill continues where the
last backup left off.

- `--kill JOB STEP`: when job JOB runs, the process SIGKILLs itself after
  the training step that brings the optimizer's step count to STEP (before
  that step's backup for an even STEP, after it for an odd one).
- `--pause-write JOB NAME`: when job JOB runs, its backup named NAME stops
  half-written (its files in the temporary directory, not yet renamed),
  writes `DIR/paused`, and waits to be killed.

Jobs: `keyed` (`make_keyed_image_pipeline`), `cache` (a teacher-output
cache built in `DIR/teacher_cache` on the first run, and
`cached_teacher_pipeline`), `tfdata` (a shuffled `tf.data.Dataset`,
TensorFlow only).
"""

import argparse
import os
import signal
import time

EXAMPLES, BATCH, EPOCHS = 40, 8, 3
SHAPE = (12, 12, 1)


def jobs():
    import keras

    names = ["keyed", "cache"]
    return names + ["tfdata"] if keras.backend.backend() == "tensorflow" else names


def arrays():
    from conftest import random_uint8_images

    return random_uint8_images(EXAMPLES, SHAPE)


def networks():
    import keras

    from conftest import make_network

    keras.utils.set_random_seed(0)
    return make_network(8, "t", input_shape=SHAPE), make_network(4, "s", input_shape=SHAPE)


def distiller(job, directory):
    """The job's Distiller and its training data (as `fit` arguments)."""
    import keras

    import keras_unikd
    from keras_unikd.data import keyed_steps_per_epoch
    from keras_unikd.data import make_keyed_image_pipeline

    teacher, student = networks()
    x, y = arrays()
    steps = keyed_steps_per_epoch(EXAMPLES, BATCH)
    options = dict(augment=True, crop_padding=2)
    data = dict(x=make_keyed_image_pipeline(x, y, BATCH, 0, EPOCHS, **options),
                steps_per_epoch=steps)
    if job == "cache":
        teacher, data = cached(teacher, directory, x, y, options, steps)
    elif job == "tfdata":
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((x.astype("float32") / 255, y))
        data = dict(x=ds.shuffle(EXAMPLES, seed=1).batch(BATCH))
    model = keras_unikd.Distiller(teacher, student, terms=make_terms())
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"])
    return model, data


def make_terms():
    from keras_unikd import terms

    return [
        terms.CrossEntropy(),
        terms.DKD(warmup_epochs=2),
        terms.UniKDFeatures(["t_stage1_preact"], ["s_stage1", "s_stage2", "s_pool"], seed=0),
    ]


def cached(teacher, directory, x, y, options, steps):
    from keras_unikd.cache import build_teacher_cache
    from keras_unikd.cache import cached_teacher_pipeline
    from keras_unikd.cache import open_teacher_cache

    path = os.path.join(directory, "teacher_cache")
    if not os.path.exists(os.path.join(path, "manifest.json")):
        build_teacher_cache(path, teacher, make_terms(), x, y, 0, EPOCHS, verbose=0, **options)
    cache = open_teacher_cache(path, teacher, make_terms(), x, y, 0, EPOCHS, **options)
    return cache.teacher_source(), dict(
        x=cached_teacher_pipeline(cache, x, y, BATCH), steps_per_epoch=steps
    )


def kill_at_step(step):
    """A callback that SIGKILLs this process once the optimizer has taken `step` steps."""
    import keras

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == step:
                os.kill(os.getpid(), signal.SIGKILL)

    return Kill()


def pause_backup_write(job, name, marker):
    """Makes the backup `name` of `job` stop after its files are written, before the rename."""
    from keras_unikd import atomic_files

    flush = atomic_files.fsync_tree

    def paused(directory):
        if directory.endswith(name) and f"{os.sep}{job}{os.sep}" in directory:
            with open(marker, "w") as file:
                file.write("paused\n")
            time.sleep(600)
        flush(directory)

    atomic_files.fsync_tree = paused


def run(job, directory, args):
    import numpy as np

    import keras_unikd
    from workers.launch import student_arrays

    model, data = distiller(job, directory)
    callbacks = [
        keras_unikd.callbacks.StepBackup(
            os.path.join(directory, job, "backup"), save_every_steps=2, save_every_minutes=None
        ),
        keras_unikd.callbacks.StudentCheckpoint(os.path.join(directory, job, "best.keras")),
    ]
    if args.kill and args.kill[0] == job:
        step = int(args.kill[1])
        callbacks.insert(step % 2, kill_at_step(step))  # before or after the backup
    x, y = arrays()
    history = model.fit(
        **data,
        epochs=EPOCHS,
        validation_data=(x[:16].astype("float32") / 255, y[:16]),
        callbacks=callbacks,
        verbose=0,
    )
    result = {f"history/{key}": np.array(values) for key, values in history.history.items()}
    result["epochs"] = np.array(history.epoch)
    result.update(student_arrays("student", model.student))
    for index, variable in enumerate(model.optimizer.variables):
        result[f"optimizer/{index}"] = np.asarray(variable)
    np.savez(os.path.join(directory, job, "result.npz"), **result)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--kill", nargs=2)
    parser.add_argument("--pause-write", nargs=2)
    args = parser.parse_args()

    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if args.pause_write:
        pause_backup_write(*args.pause_write, os.path.join(args.directory, "paused"))
    for job in jobs():
        if not os.path.exists(os.path.join(args.directory, job, "result.npz")):
            os.makedirs(os.path.join(args.directory, job), exist_ok=True)
            run(job, args.directory, args)


if __name__ == "__main__":
    main()
