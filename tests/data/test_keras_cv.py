"""keras-cv (the `cv` extra): its augmentation layers in a user's own tf.data
pipeline feeding a Distiller."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_unikd
from conftest import make_network
from keras_unikd import terms

keras_cv = pytest.importorskip("keras_cv", reason="the cv extra is not installed")


def test_a_keras_cv_pipeline_feeds_a_distiller():
    rng = np.random.default_rng(0)
    x = rng.random((16, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 5, size=(16,)).astype("int32")
    augment = keras_cv.layers.RandAugment(
        value_range=(0, 1), augmentations_per_image=2, magnitude=0.3, seed=1
    )
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    train = train.map(lambda images, labels: (augment(images, training=True), labels))
    images, _ = next(iter(train))
    assert images.shape == (8, 12, 12, 3) and not np.allclose(images.numpy(), x[:8])
    keras.utils.set_random_seed(0)
    teacher = make_network(8, "t", input_shape=(12, 12, 3))
    student = make_network(4, "s", input_shape=(12, 12, 3))
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), terms.KD()])
    distiller.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"])
    history = distiller.fit(train, epochs=1, verbose=0)
    assert np.isfinite(history.history["kd_loss"][0]) and history.history["kd_loss"][0] > 0
