"""Attention transfer against a NumPy re-derivation of the reference code
(megvii-research/mdistiller, distillers/AT.py), on every backend."""

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import make_network
from conftest import weights_of
from keras_unikd import terms
from keras_unikd.methods import method_terms
from keras_unikd.taps import FeatureTap


def pool(feature, factor):
    """Average pooling of a channels-last map by an integer factor."""
    b, h, w, c = feature.shape
    return feature.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def attention(feature, p):
    q = (feature.astype("float64") ** p).mean(axis=-1).reshape(len(feature), -1)
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


def reference(student_maps, teacher_maps, p, weight):
    """The reference: the larger map pooled to the smaller, then the mean of the
    squared attention differences over the batch and positions, summed."""
    total = 0.0
    for s, t in zip(student_maps, teacher_maps):
        if s.shape[1] > t.shape[1]:
            s = pool(s, s.shape[1] // t.shape[1])
        elif s.shape[1] < t.shape[1]:
            t = pool(t, t.shape[1] // s.shape[1])
        total += np.mean((attention(s, p) - attention(t, p)) ** 2)
    return weight * total


def maps(model, paths, x):
    _, features = FeatureTap(model, paths)(x)
    return [np.asarray(keras.ops.convert_to_numpy(f), "float64") for f in features]


@pytest.mark.parametrize("p", [2.0, 1.0])
def test_at_loss_is_the_reference(pair, batch, p):
    teacher, student = pair
    x, y = batch
    # stage2 (6x6) against stage3 (3x3): the teacher's map is pooled by 2.
    t_paths, s_paths = ["t_stage1", "t_stage2"], ["s_stage1", "s_stage3"]
    at = terms.AttentionTransfer(t_paths, s_paths, p=p, weight=1000.0)
    distiller = keras_unikd.Distiller(teacher, student, terms=[at])
    loss = distiller.compute_distillation_losses(x, y, training=False)[1]["at_loss"]
    expected = reference(maps(student, s_paths, x), maps(teacher, t_paths, x), p, 1000.0)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss)), expected, rtol=2e-5)


def test_the_method_trains_the_student_and_round_trips(pair, batch):
    teacher, student = pair
    x, y = batch
    at = method_terms(
        "at", teacher_features=["t_stage1", "t_stage2"], student_features=["s_stage1", "s_stage2"]
    )
    assert [type(t).__name__ for t in at] == ["CrossEntropy", "AttentionTransfer"]
    assert (at[0].weight, at[1].weight, at[1].p) == (1.0, 1000.0, 2.0)
    distiller = keras_unikd.Distiller(teacher, student, terms=at)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    before = weights_of(student.get_layer("s_conv1"))[0]
    logs = distiller.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["at_loss"]) and logs["at_loss"] > 0
    assert not np.allclose(before, weights_of(student.get_layer("s_conv1"))[0])
    config = keras.saving.serialize_keras_object(at[1])
    restored = keras.saving.deserialize_keras_object(config)
    assert restored.get_config() == at[1].get_config()


def test_bad_pairs_are_named(pair):
    with pytest.raises(ValueError, match="as many teacher_features as student_features"):
        terms.AttentionTransfer(["t_stage1", "t_stage2"], ["s_stage1"])
    with pytest.raises(ValueError, match="reads feature maps; layer 's_pool'"):
        keras_unikd.Distiller(*pair, terms=[terms.AttentionTransfer("t_stage1", "s_pool")])
    odd = make_network(4, "s", input_shape=(10, 10, 1))
    teacher = make_network(8, "t", input_shape=(10, 10, 1))
    # 5x5 against 3x3: no integer pooling factor.
    with pytest.raises(ValueError, match=r"'t_stage2' is \(5, 5\) and 's_stage3' \(3, 3\)"):
        keras_unikd.Distiller(teacher, odd, terms=[terms.AttentionTransfer("t_stage2", "s_stage3")])
    with pytest.raises(ValueError, match="AttentionTransfer p must be > 0"):
        terms.AttentionTransfer("t_stage1", "s_stage1", p=0.0)


def test_attention_transfer_needs_the_teacher_online():
    needs = terms.AttentionTransfer(["t_stage1"], ["s_stage1"]).teacher_needs()
    assert needs.feature_maps == ("t_stage1",) and not needs.cacheable
    assert "'at' (AttentionTransfer)" in needs.reason
