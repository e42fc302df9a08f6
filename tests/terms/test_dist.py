"""DIST against a NumPy re-derivation of the authors' code
(hunto/image_classification_sota, lib/models/losses/dist_kd.py), on every backend."""

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import weights_of
from keras_unikd import terms
from keras_unikd.methods import method_terms


def np_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def np_pearson_rows(a, b):
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def np_dist(z_s, z_t, beta, gamma, tau):
    y_s, y_t = np_softmax(z_s / tau), np_softmax(z_t / tau)
    inter = tau**2 * (1 - np_pearson_rows(y_s, y_t).mean())
    intra = tau**2 * (1 - np_pearson_rows(y_s.T, y_t.T).mean())
    return beta * inter, gamma * intra


def logits_pair(seed=0, batch=16, classes=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, classes)) * 3, rng.normal(size=(batch, classes)) * 3


@pytest.mark.parametrize("beta, gamma, tau", [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0)])
def test_dist_is_the_reference(beta, gamma, tau):
    z_s, z_t = logits_pair()
    dist = terms.DIST(beta=beta, gamma=gamma, temperature=tau)
    got = dist.relations(z_s.astype("float32"), z_t.astype("float32"))
    expected = np_dist(z_s, z_t, beta, gamma, tau)
    np.testing.assert_allclose(
        [float(keras.ops.convert_to_numpy(v)) for v in got], expected, rtol=2e-5, atol=1e-7
    )


def test_sample_weights_weight_the_inter_class_terms():
    z_s, z_t = logits_pair(1)
    weights = np.zeros(len(z_s), "float32")
    weights[:4] = 2.0
    inter, intra = terms.DIST().relations(
        z_s.astype("float32"), z_t.astype("float32"), sample_weight=weights
    )
    rho = np_pearson_rows(np_softmax(z_s), np_softmax(z_t))
    expected_inter = np.sum(weights * (1 - rho)) / len(z_s)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(inter)), expected_inter, rtol=2e-5)
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(intra)), np_dist(z_s, z_t, 1, 1, 1)[1], rtol=2e-5
    )


def test_the_method_trains_the_student_and_round_trips(pair, batch):
    teacher, student = pair
    x, y = batch
    ce, dist = method_terms("dist")
    assert (ce.weight, dist.weight, dist.beta, dist.gamma, dist.temperature) == (1, 1, 1, 1, 1)
    distiller = keras_unikd.Distiller(teacher, student, terms=[ce, dist])
    assert distiller.teacher_needs.cacheable
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    before = weights_of(student.get_layer("s_conv1"))[0]
    logs = distiller.train_on_batch(x, y, return_dict=True)
    assert logs["dist_inter_loss"] > 0 and logs["dist_intra_loss"] > 0
    assert not np.allclose(before, weights_of(student.get_layer("s_conv1"))[0])
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(dist))
    assert isinstance(restored, terms.DIST) and restored.get_config() == dist.get_config()


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="DIST temperature"):
        terms.DIST(temperature=0.0)
    with pytest.raises(ValueError, match="DIST gamma"):
        terms.DIST(gamma=-1.0)
