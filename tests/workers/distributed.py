"""Trains one small Distiller on one device and data-parallel; saves the results.

    python -m workers.distributed replicas OUT.npz CACHE     # 2 CPU devices, this process
    python -m workers.distributed multiworker OUT.npz CACHE  # one TF worker of TF_CONFIG's cluster

`replicas` trains the same configuration (same initial weights, data and
global batch) without distribution and then, under TensorFlow, with a
`MirroredStrategy` over two logical CPUs (plus a short `"sampled"` run), or,
under JAX (started with `XLA_FLAGS=--xla_force_host_platform_device_count=2`),
with `keras.distribution.DataParallel` and with the `ModelParallel` layout of
`docs/robustness.md`. `multiworker` trains it with a
`MultiWorkerMirroredStrategy`; worker 0 saves. The student has no
BatchNormalization (per-replica batch statistics would differ from the
global batch's); the teacher's, in inference mode, is fine.

Each configuration also trains from the teacher-output cache at CACHE
(`build_cache`, which the test runs once before starting the workers):
a Distiller without the teacher model (cross-entropy, KD and UniKD's FDP
head on a pooled teacher feature), on 64 uint8 images, from the keyed
batches of `cached_teacher_pipeline` with example indices (prefixes
`cached_single`, `cached_replicated`, `cached_multiworker`); under JAX it
has a CRD term too, whose refusal of a `MirroredStrategy` the TensorFlow
replicas worker records instead (`crd/error`).
"""

import functools
import os
import sys

GLOBAL_BATCH = 16
INPUT_SHAPE = (8, 8, 1)
EPOCHS = 2
# The cached runs' keyed views: 64 uint8 images, seed 0, flips and crops.
CACHE_OPTIONS = {"augment": True, "crop_padding": 1, "mean": 0.5, "std": 0.25}


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


def compiled(teacher, **kwargs):
    """A compiled Distiller of `teacher` (a model or a teacher source) and the student."""
    import keras

    import keras_unikd

    distiller = keras_unikd.Distiller(teacher, network(4, "s", batch_norm=False), **kwargs)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"]
    )
    return distiller


def train(form="gaussian", epochs=EPOCHS, validate=False):
    """Builds (seeded, so every process starts alike), trains, returns results."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    distiller = compiled(
        network(8, "t", batch_norm=True),
        teacher_features=["t_stage1"],
        student_features=["s_stage1", "s_stage2", "s_pool"],
        distribution_loss=form,
        warmup_epochs=2,
        seed=0,
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


def cache_data():
    """The cached runs' training images (uint8) and labels."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4 * GLOBAL_BATCH, *INPUT_SHAPE), dtype=np.uint8)
    return images, rng.integers(0, 5, size=(4 * GLOBAL_BATCH,)).astype("int32")


def cached_terms(crd):
    """The cached runs' terms: the logits and a pooled teacher feature (the
    data path of a cache; `train` covers the aggregator), and with `crd` CRD."""
    from keras_unikd import terms

    distillation = [
        terms.CrossEntropy(),
        terms.KD(),
        terms.UniKDFeatures(["t_stage1"], ["s_pool"], distribution_loss="gaussian", seed=0),
    ]
    if crd:
        labels = cache_data()[1]
        distillation.append(
            terms.ContrastiveRepresentation(
                "t_stage1", "s_pool", labels=labels, num_negatives=8, seed=0
            )
        )
    return distillation


def build_cache(directory):
    """Writes the teacher-output cache of the cached runs (weak views, 2 epochs)."""
    import keras

    from keras_unikd.cache import build_teacher_cache

    keras.utils.set_random_seed(0)
    teacher = network(8, "t", batch_norm=True)
    build_teacher_cache(
        directory, teacher, cached_terms(True), *cache_data(), seed=0, epochs=EPOCHS,
        verbose=0, **CACHE_OPTIONS,
    )


@functools.cache
def cached_batches(directory):
    """`(cache, its keyed batches with example indices)`, made once per process."""
    from keras_unikd.cache import cached_teacher_pipeline
    from keras_unikd.cache import open_teacher_cache

    images, labels = cache_data()
    cache = open_teacher_cache(
        directory, None, cached_terms(True), images, labels, 0, EPOCHS, **CACHE_OPTIONS
    )
    batches = cached_teacher_pipeline(
        cache, images, labels, GLOBAL_BATCH, with_example_index=True
    )
    return cache, batches


def train_cached(directory, crd):
    """Trains `cached_terms(crd)` from the cache, without the teacher model."""
    import keras

    cache, batches = cached_batches(directory)
    keras.utils.set_random_seed(0)
    distiller = compiled(cache.teacher_source(), terms=cached_terms(crd))
    # 4 steps of the 64 examples an epoch.
    history = distiller.fit(batches, epochs=EPOCHS, steps_per_epoch=4, verbose=0)
    return distiller, history.history


def crd_error(directory):
    """The message of CRD's refusal to train under the current strategy."""
    try:
        train_cached(directory, crd=True)
    except ValueError as error:
        return str(error)
    return "(no error)"


def results(prefix, distiller, history):
    import numpy as np

    from workers.launch import student_arrays

    arrays = {f"{prefix}/{name}": np.array(values) for name, values in history.items()}
    arrays.update(student_arrays(prefix, distiller.student))
    return arrays


def run_replicas(strategy, cache):
    import keras

    # CRD trains under JAX's DataParallel only (see crd_error).
    crd = strategy is None
    arrays = results("single", *train())
    arrays.update(results("cached_single", *train_cached(cache, crd)))
    if strategy is not None:
        with strategy.scope():
            arrays.update(results("replicated", *train()))
            arrays.update(results("cached_replicated", *train_cached(cache, crd)))
            arrays.update(results("sampled", *train(form="sampled", epochs=1)))
            arrays["crd/error"] = crd_error(cache)
        return arrays
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    arrays.update(results("replicated", *train()))
    arrays.update(results("cached_replicated", *train_cached(cache, crd)))
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


def main(mode, out, cache):
    import json

    import numpy as np

    strategy = configure_devices(mode)
    if mode == "replicas":
        arrays = run_replicas(strategy, cache)
    else:
        with strategy.scope():
            arrays = results("multiworker", *train(validate=True))
            arrays.update(results("cached_multiworker", *train_cached(cache, crd=False)))
        if json.loads(os.environ["TF_CONFIG"])["task"]["index"] != 0:
            return
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
