"""Trains a small version of the demo configuration, seeded and deterministic.

    python -m workers.demo_run OUT.npz [--runs N]

The Fashion-MNIST demo's teacher and student (`keras_unikd.models`) on 192
random 16x16 images (28x28 in the demo), 3 epochs of 3 batches, UniKD with the sampled
distribution loss (so the heads' noise state matters) and a 2-epoch warm-up.
Seeds come from `keras.utils.set_random_seed`; under TensorFlow,
`tf.config.experimental.enable_op_determinism()` is on.

`--runs N` trains N times in this process and saves each run's student.
"""

import argparse

EXAMPLES = 192
IMAGE_SHAPE = (16, 16, 1)
BATCH_SIZE = 64
EPOCHS = 3


def data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((EXAMPLES, *IMAGE_SHAPE), dtype=np.float32)
    y = rng.integers(0, 10, size=(EXAMPLES,)).astype("int32")
    return x, y


def train(args):
    import keras

    import keras_unikd
    from keras_unikd.models import fashion_student
    from keras_unikd.models import fashion_teacher

    keras.utils.set_random_seed(0)
    distiller = keras_unikd.Distiller(
        fashion_teacher(input_shape=IMAGE_SHAPE),
        fashion_student(input_shape=IMAGE_SHAPE),
        teacher_features=["stage1_preact"],
        student_features=["stage1", "stage2", "stage3", "pool"],
        warmup_epochs=2,
        seed=0,
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"]
    )
    x, y = data()
    history = distiller.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        shuffle=False,  # the same batches in every epoch of every run
        validation_data=(x[:64], y[:64]),
        verbose=0,
    )
    return distiller, history


def results(prefix, distiller, history):
    import numpy as np

    from workers.launch import student_arrays

    x, y = data()
    arrays = {
        f"{prefix}/epochs_run": np.array(history.epoch),
        f"{prefix}/training_step": np.asarray(distiller.training_step),
        f"{prefix}/iterations": np.asarray(distiller.optimizer.iterations),
        f"{prefix}/predictions": np.asarray(distiller.student.predict(x, verbose=0)),
        f"{prefix}/evaluation": np.array(distiller.evaluate(x, y, verbose=0)),
    }
    arrays.update(student_arrays(prefix, distiller.student))
    return arrays


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    import keras
    import numpy as np

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    arrays = {}
    for run in range(args.runs):
        arrays.update(results(f"run{run}", *train(args)))
    np.savez(args.out, **arrays)


if __name__ == "__main__":
    main()
