"""Shared fixtures: tiny functional teacher/student pairs with named stages."""

import keras
import numpy as np
import pytest


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
