"""Trains one small Distiller on one device and data-parallel; saves the results.

    python -m workers.distributed replicas OUT.npz     # 2 CPU devices, this process
    python -m workers.distributed multiworker OUT.npz  # one TF worker of TF_CONFIG's cluster

`replicas` trains the same configuration (same initial weights, data and
global batch) without distribution and then, under TensorFlow, with a
`MirroredStrategy` over two logical CPUs (plus a short `"sampled"` run), or,
under JAX (started with `XLA_FLAGS=--xla_force_host_platform_device_count=2`),
with `keras.distribution.DataParallel` and with the `ModelParallel` layout of
`docs/robustness.md`. `multiworker` trains it with a
`MultiWorkerMirroredStrategy`; worker 0 saves. The student has no
BatchNormalization (per-replica batch statistics would differ from the
global batch's); the teacher's, in inference mode, is fine.
"""

import os
import sys

GLOBAL_BATCH = 16
INPUT_SHAPE = (8, 8, 1)


def configure_devices(mode):
    """Sets up devices and returns a strategy; must run before TF starts."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if mode == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def network(width, name, batch_norm):
    import keras

    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_conv1")(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn1")(x)
    x = keras.layers.ReLU(name=f"{name}_stage1")(x)
    x = keras.layers.Conv2D(
        2 * width, 3, strides=2, padding="same", activation="relu", name=f"{name}_stage2"
    )(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name=f"{name}_logits")(x), name=name)


def train(form="gaussian", epochs=2, validate=False):
    """Builds (seeded, so every process starts alike), trains, returns results."""
    import keras
    import numpy as np

    import keras_unikd

    keras.utils.set_random_seed(0)
    distiller = keras_unikd.Distiller(
        network(8, "t", batch_norm=True),
        network(4, "s", batch_norm=False),
        teacher_features=["t_stage1"],
        student_features=["s_stage1", "s_stage2", "s_pool"],
        distribution_loss=form,
        warmup_epochs=2,
        seed=0,
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"]
    )
    rng = np.random.default_rng(0)
    x = rng.random((4 * GLOBAL_BATCH, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, 5, size=(4 * GLOBAL_BATCH,)).astype("int32")
    history = distiller.fit(
        x,
        y,
        batch_size=GLOBAL_BATCH,
        epochs=epochs,
        shuffle=False,
        validation_data=(x, y) if validate else None,
        verbose=0,
    )
    return distiller, history.history


def results(prefix, distiller, history):
    import numpy as np

    from workers.launch import student_arrays

    arrays = {f"{prefix}/{name}": np.array(values) for name, values in history.items()}
    arrays.update(student_arrays(prefix, distiller.student))
    return arrays


def run_replicas(strategy):
    import keras

    arrays = results("single", *train())
    if strategy is not None:
        with strategy.scope():
            arrays.update(results("replicated", *train()))
            arrays.update(results("sampled", *train(form="sampled", epochs=1)))
        return arrays
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    arrays.update(results("replicated", *train()))
    keras.distribution.set_distribution(model_parallel())
    distiller, history = train()
    arrays.update(results("model_parallel", distiller, history))
    arrays["model_parallel/teacher_stage2_spec"] = str(
        distiller.teacher.get_layer("t_stage2").kernel.value.sharding.spec
    )
    keras.distribution.set_distribution(None)
    return arrays


def model_parallel():
    """The LayoutMap of docs/robustness.md: the teacher's kernels split over 'model'."""
    import keras

    mesh = keras.distribution.DeviceMesh(
        (1, 2), axis_names=("batch", "model"), devices=keras.distribution.list_devices()
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["t_stage.*/kernel"] = (None, None, None, "model")  # conv output channels
    layout_map["t_logits/kernel"] = ("model", None)
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def main(mode, out):
    import json

    import numpy as np

    strategy = configure_devices(mode)
    if mode == "replicas":
        arrays = run_replicas(strategy)
    else:
        with strategy.scope():
            arrays = results("multiworker", *train(validate=True))
        if json.loads(os.environ["TF_CONFIG"])["task"]["index"] != 0:
            return
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
