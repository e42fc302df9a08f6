"""Shared fixtures: tiny functional teacher/student pairs with named stages."""

import os
import shutil
import tempfile

import keras
import numpy as np
import pytest

from workers.launch import jax_cache_env


def make_network(width, name, input_shape=(12, 12, 1), num_classes=5):
    """A tiny CNN whose stages are named `<name>_stage1`, ..., `<name>_pool`."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_conv1")(inputs)
    x = keras.layers.BatchNormalization(name=f"{name}_stage1_preact")(x)
    x = keras.layers.ReLU(name=f"{name}_stage1")(x)
    x = keras.layers.Conv2D(
        2 * width, 3, strides=2, padding="same", activation="relu", name=f"{name}_stage2"
    )(x)
    x = keras.layers.Conv2D(
        4 * width, 3, strides=2, padding="same", activation="relu", name=f"{name}_stage3"
    )(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    logits = keras.layers.Dense(num_classes, name=f"{name}_logits")(x)
    return keras.Model(inputs, logits, name=name)


def random_uint8_images(num, shape, num_classes=5):
    """`num` random uint8 images of `shape` and int32 labels, seeded."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(num, *shape), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=(num,)).astype("int32")
    return images, labels


def teacher_with_batch_statistics(input_shape):
    """`make_network(8, "t")` whose batch-norm statistics make inference mode matter."""
    keras.utils.set_random_seed(0)
    model = make_network(8, "t", input_shape=input_shape)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.1, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, "float32"))
    return model


@pytest.fixture
def pair():
    keras.utils.set_random_seed(0)
    return make_network(8, "t"), make_network(4, "s")


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    x = rng.random((16, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 5, size=(16,)).astype("int32")
    return x, y


def weights_of(layer):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in layer.weights]


@pytest.fixture(scope="session")
def quick_teachers(tmp_path_factory):
    """One cache of --quick teachers for the benchmark scripts' smoke runs."""
    return str(tmp_path_factory.mktemp("teachers"))


# tests/data holds the dataset loaders' and tf.data pipelines' tests. That
# code is TensorFlow's whatever the Keras backend, so they run in the
# TensorFlow pass of `make test` only; a test marked `every_backend` (a
# pipeline feeding a model) runs in every pass. (One conftest.py for all of
# tests/: the test modules import helpers with `from conftest import ...`.)
_DATA_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(
        reason="tf.data code, the same under every Keras backend: runs in the TensorFlow pass"
    )
    for item in items:
        in_data = os.path.dirname(os.path.abspath(item.path)) == _DATA_TESTS
        if in_data and item.get_closest_marker("every_backend") is None:
            item.add_marker(skip)


# Under JAX most of a test's time is XLA compiling the steps of small models,
# and many tests compile the same programs. JAX's persistent compilation
# cache, in one directory for the test processes of a pass (and the worker
# programs they start), lets a process load what another compiled: the same
# executables, so the same numbers. The first process to configure (the
# xdist controller, or a lone pytest) creates the directory and removes it.
def pytest_configure(config):
    if keras.backend.backend() != "jax" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    config.jax_cache_dir = tempfile.mkdtemp(prefix="keras-unikd-jax-cache-")
    os.environ.update(jax_cache_env(config.jax_cache_dir))
    import jax  # imported with keras already: its flags read the environment then

    jax.config.update("jax_compilation_cache_dir", config.jax_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if getattr(config, "jax_cache_dir", None):
        shutil.rmtree(config.jax_cache_dir, ignore_errors=True)


# `pytest -n N` (`--dist load`): modules with module-scoped fixtures go to one
# process whole, other tests one by one (tests/xdist_scheduling.py).
@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "load":
        return None
    from xdist_scheduling import ModuleFixtureScheduling

    return ModuleFixtureScheduling(config, log)
