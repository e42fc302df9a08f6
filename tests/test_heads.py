"""Softmax heads: networks that output probabilities are distilled on their logits."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import keras_unikd
from keras_unikd import losses
from keras_unikd import terms

HEADS = ["dense_softmax", "softmax_layer", "activation_softmax", "nested"]


def network(width, name, head="logits"):
    """A tiny CNN; `head` chooses how (or whether) it ends in a softmax.

    Every head has the same weights, in the same order, so weights copy
    between them.
    """
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Conv2D(width, 3, activation="relu", name=f"{name}_stage1")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(hidden)
    activation = "softmax" if head == "dense_softmax" else None
    outputs = keras.layers.Dense(5, activation=activation, name=f"{name}_head")(hidden)
    if head == "softmax_layer":
        outputs = keras.layers.Softmax()(outputs)
    elif head == "activation_softmax":
        outputs = keras.layers.Activation("softmax", name=f"{name}_probabilities")(outputs)
    model = keras.Model(inputs, outputs, name=name)
    if head == "nested":  # a keras.applications model inside a wrapper, say
        inner = network(width, name, "dense_softmax")
        model = keras.Sequential(
            [keras.Input((8, 8, 1)), keras.layers.Rescaling(1.0, name=f"{name}_scale"), inner],
            name=f"{name}_wrapper",
        )
    return model


def with_head(model, width, head):
    copy = network(width, model.name, head)
    copy.set_weights(model.get_weights())
    return copy


def logits_terms():
    return [terms.CrossEntropy(), terms.KD(), terms.DKD(warmup_epochs=0)]


def value(tensor):
    return np.asarray(ops.convert_to_numpy(tensor))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 5, size=(16,)).astype("int32")
    return x, y


@pytest.mark.parametrize("head", HEADS)
def test_softmax_heads_give_the_losses_of_their_logits(head, data):
    x, y = data
    keras.utils.set_random_seed(0)
    teacher, student = network(8, "t"), network(4, "s")
    plain = keras_unikd.Distiller(teacher, student, terms=logits_terms())
    with pytest.warns(UserWarning, match=r"The teacher 't.*' ends in a softmax \(layer '.*'\)"):
        softmax = keras_unikd.Distiller(
            with_head(teacher, 8, head), with_head(student, 4, head), terms=logits_terms()
        )
    expected = plain.compute_distillation_losses(x, y, training=False)
    got = softmax.compute_distillation_losses(x, y, training=False)
    np.testing.assert_allclose(value(got[0]), value(expected[0]), rtol=1e-5)
    for name in ("ce_loss", "kd_loss", "dkd_loss"):
        np.testing.assert_allclose(value(got[1][name]), value(expected[1][name]), rtol=1e-5)
    # The Distiller's outputs are logits; the student still outputs probabilities.
    np.testing.assert_allclose(value(softmax(x)), value(student(x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value(softmax.student(x)).sum(axis=-1), 1.0, rtol=1e-5)


def test_a_softmax_student_trains_like_its_logits_twin(data):
    """Same updates, the same variables: the student keeps its softmax and its classes."""
    x, y = data
    keras.utils.set_random_seed(0)
    teacher, student = network(8, "t"), network(4, "s")
    twin_teacher, twin_student = (
        with_head(m, w, "dense_softmax") for m, w in ((teacher, 8), (student, 4))
    )
    distillers = [
        keras_unikd.Distiller(teacher, student, terms=logits_terms()),
        keras_unikd.Distiller(twin_teacher, twin_student, terms=logits_terms()),
    ]
    histories = []
    for distiller in distillers:
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), metrics=["accuracy"])
        histories.append(distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0))
    for name in ("loss", "kd_loss", "accuracy"):
        assert histories[1].history[name] == pytest.approx(histories[0].history[name], rel=1e-5)
    for trained, twin in zip(student.get_weights(), twin_student.get_weights()):
        np.testing.assert_allclose(twin, trained, rtol=1e-5, atol=1e-6)
    probabilities = value(twin_student(x))
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(-1), value(student(x)).argmax(-1))
    results = [d.evaluate(x, y, verbose=0, return_dict=True) for d in distillers]
    assert results[1] == pytest.approx(results[0], rel=1e-5)


def test_a_distiller_with_softmax_heads_saves_the_models_as_given(data, tmp_path):
    x, y = data
    keras.utils.set_random_seed(0)
    with pytest.warns(UserWarning, match="ends in a softmax"):
        distiller = keras_unikd.Distiller(
            network(8, "t", "activation_softmax"),
            network(4, "s", "dense_softmax"),
            terms=logits_terms(),
        )
    path = os.path.join(tmp_path, "distiller.keras")
    distiller.save(path)
    with pytest.warns(UserWarning, match="ends in a softmax"):
        loaded = keras.models.load_model(path)
    np.testing.assert_allclose(value(loaded.student(x)).sum(axis=-1), 1.0, rtol=1e-5)
    assert loaded.student.get_layer("s_head").activation is keras.activations.softmax
    expected = distiller.compute_distillation_losses(x, y, training=False)[1]
    got = loaded.compute_distillation_losses(x, y, training=False)[1]
    for name, loss in expected.items():
        assert float(value(got[name])) == pytest.approx(float(value(loss)), rel=1e-6), name


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="JAX creates and first runs MobileNetV2 op by op: over 60 s on the 2-core CPU; "
    "the small models above test the softmax heads under JAX",
)
def test_a_keras_applications_model_with_its_softmax_trains():
    keras.utils.set_random_seed(0)
    teacher = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
    inputs = keras.Input((32, 32, 3))
    hidden = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    student = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    with pytest.warns(UserWarning, match="'predictions'"):
        distiller = keras_unikd.Distiller(
            teacher, student, logits_loss="kd", distribution_loss=None, warmup_epochs=0
        )
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=(4,))
    head = teacher.get_layer("predictions")
    pooled = keras.Model(teacher.input, head.input)(x)
    teacher_logits = ops.matmul(pooled, head.kernel) + head.bias
    student_logits = distiller(x)
    kd = distiller.compute_distillation_losses(x, y, training=False)[1]["kd_loss"]
    expected = losses.kd_loss(student_logits, teacher_logits, 4.0)
    assert float(value(kd)) == pytest.approx(float(value(expected)), rel=1e-4)
    distiller.compile(optimizer="sgd", jit_compile=False)
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert history.history["kd_loss"][0] > 1e-4


class HiddenSoftmax(keras.layers.Layer):
    """A head that applies the softmax itself, where the Distiller cannot see it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(5)

    def call(self, inputs):
        return ops.softmax(self.dense(inputs))


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_a_hidden_softmax_is_refused_on_the_first_batch(role, data):
    x, y = data
    keras.utils.set_random_seed(0)
    networks = {"teacher": network(8, "t"), "student": network(4, "s")}
    inputs = keras.Input((8, 8, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    networks[role] = keras.Model(inputs, HiddenSoftmax()(pooled), name="hidden")
    distiller = keras_unikd.Distiller(
        networks["teacher"], networks["student"], terms=logits_terms()
    )
    distiller.compile(optimizer="sgd")
    with pytest.raises(
        ValueError,
        match=rf"The {role} 'hidden' outputs probabilities, not logits.*"
        "classifier_activation=None",
    ):
        distiller.fit(x, y, batch_size=8, verbose=0)
    assert float(value(distiller.training_step)) == 0.0  # refused before training
