"""Models with several inputs: dict (or list) batches, one view or two."""

import keras
import numpy as np
import pytest

import keras_unikd
from keras_unikd import terms


def two_input_network(width, name):
    """Image and a side vector, named inputs, one logits output."""
    image = keras.Input((8, 8, 1), name="image")
    side = keras.Input((3,), name="side")
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_conv")(
        image
    )
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    x = keras.layers.Concatenate(name=f"{name}_joined")([x, side])
    logits = keras.layers.Dense(4, name=f"{name}_logits")(x)
    return keras.Model({"image": image, "side": side}, logits, name=name)


@pytest.fixture
def networks():
    keras.utils.set_random_seed(0)
    return two_input_network(8, "t"), two_input_network(4, "s")


def numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def batch(seed=0, size=8):
    rng = np.random.default_rng(seed)
    x = {
        "image": rng.random((size, 8, 8, 1), dtype=np.float32),
        "side": rng.random((size, 3), dtype=np.float32),
    }
    return x, rng.integers(0, 4, size)


def test_dict_batches_fit_evaluate_and_predict(networks):
    teacher, student = networks
    distiller = keras_unikd.Distiller(
        teacher, student, teacher_features=["t_conv"], student_features=["s_conv", "s_joined"]
    )
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    x, y = batch()
    before = [numpy(w) for w in student.trainable_weights]
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(b, numpy(a)) for b, a in zip(before, student.trainable_weights))
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6
    )
    assert np.isfinite(distiller.evaluate(x, y, verbose=0, return_dict=True)["loss"])


def test_two_views_of_dict_inputs(networks):
    teacher, student = networks
    distiller = keras_unikd.Distiller(
        teacher, student, terms=[terms.CrossEntropy(views=2), terms.KD(views=2)]
    )
    distiller.compile(optimizer="sgd")
    (weak, y), (strong, _) = batch(0), batch(1)
    total, losses, logits = distiller.compute_distillation_losses((weak, strong), y)
    # One concatenated teacher pass gives the two separate passes' logits.
    kd = keras_unikd.losses.kd_loss
    expected = sum(
        float(numpy(kd(student(view), teacher(view), 4.0))) for view in (weak, strong)
    )
    np.testing.assert_allclose(float(numpy(losses["kd_loss"])), expected, rtol=1e-5)
    np.testing.assert_allclose(numpy(logits), numpy(student(weak)), rtol=1e-6)
    history = distiller.fit((weak, strong), y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_list_of_inputs_is_one_view(networks):
    teacher, student = networks
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy()])
    x, y = batch()
    as_list = [x["image"], x["side"]]
    _, _, logits = distiller.compute_distillation_losses(as_list, y)
    np.testing.assert_allclose(numpy(logits), numpy(student(x)), rtol=1e-6)


def test_different_inputs_are_refused(networks):
    teacher, _ = networks
    image = keras.Input((8, 8, 1), name="image")
    student = keras.Model(
        image, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(image))
    )
    with pytest.raises(ValueError, match=r"Teacher input shape\(s\) .* differ"):
        keras_unikd.Distiller(teacher, student, terms=[terms.KD()])
