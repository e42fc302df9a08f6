"""Neuron selectivity transfer against a NumPy re-derivation of the reference code
(megvii-research/mdistiller, distillers/NST.py), on every backend."""

import os

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import make_network
from conftest import weights_of
from keras_unikd import terms
from keras_unikd.taps import FeatureTap
from keras_unikd.terms.base import ForwardShapes
from keras_unikd.terms.nst import NeuronSelectivityTransfer


def nchw(model, paths, x):
    """The tapped maps as PyTorch lays them out, `(batch, C, H, W)`, in float64."""
    _, features = FeatureTap(model, paths)(x)
    return [
        np.asarray(keras.ops.convert_to_numpy(f), "float64").transpose(0, 3, 1, 2)
        for f in features
    ]


def adaptive_avg_pool(f, size):
    """`adaptive_avg_pool2d(f, (size, size))` where `size` divides the map's."""
    b, c, h, w = f.shape
    return f.reshape(b, c, size, h // size, size, w // size).mean(axis=(3, 5))


def poly_kernel(a, b):
    """The reference's `poly_kernel`: `((a[:, None] * b[:, :, None]).sum(-1)) ** 2`."""
    return ((a[:, None, :, :] * b[:, :, None, :]).sum(-1)) ** 2


def reference_per_example(f_s, f_t):
    """`single_stage_nst_loss`, before its mean over the batch: `(batch,)`."""
    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        f_s = adaptive_avg_pool(f_s, t_h)
    elif s_h < t_h:
        f_t = adaptive_avg_pool(f_t, s_h)

    def normalize(f):
        f = f.reshape(f.shape[0], f.shape[1], -1)
        return f / np.maximum(np.linalg.norm(f, axis=2, keepdims=True), 1e-12)

    f_s, f_t = normalize(f_s), normalize(f_t)
    mean = lambda k: k.mean(axis=(1, 2))  # noqa: E731
    return mean(poly_kernel(f_t, f_t)) + mean(poly_kernel(f_s, f_s)) - 2 * mean(
        poly_kernel(f_s, f_t)
    )


def reference(student_maps, teacher_maps, weight, sample_weight=None):
    """`nst_loss`: the per-stage means over the batch (weighted per example), summed."""
    total = 0.0
    for s, t in zip(student_maps, teacher_maps):
        per_example = reference_per_example(s, t)
        if sample_weight is not None:
            per_example = per_example * sample_weight
        total += per_example.mean()
    return weight * total


def nst_loss(distiller, x, y, sample_weight=None):
    losses = distiller.compute_distillation_losses(
        x, y, sample_weight=sample_weight, training=False
    )[1]
    return float(keras.ops.convert_to_numpy(losses["nst_loss"]))


def test_nst_loss_is_the_reference(pair, batch):
    teacher, student = pair
    x, y = batch
    # stage2 (6x6, 16 channels) against stage3 (3x3, 16): the teacher's map is
    # pooled by 2; stage1 pairs 8 teacher channels with 4 student channels.
    t_paths, s_paths = ["t_stage1", "t_stage2"], ["s_stage1", "s_stage3"]
    nst = NeuronSelectivityTransfer(t_paths, s_paths)
    distiller = keras_unikd.Distiller(teacher, student, terms=[nst])
    student_maps, teacher_maps = nchw(student, s_paths, x), nchw(teacher, t_paths, x)
    expected = reference(student_maps, teacher_maps, 50.0)
    np.testing.assert_allclose(nst_loss(distiller, x, y), expected, rtol=2e-5)
    # Sample weights weight the per-example MMDs, over the batch size.
    weights = np.linspace(0.0, 2.0, len(x)).astype("float32")
    expected = reference(student_maps, teacher_maps, 50.0, weights)
    np.testing.assert_allclose(nst_loss(distiller, x, y, weights), expected, rtol=2e-5)


def test_the_term_trains_the_student_saves_and_loads(pair, batch, tmp_path):
    teacher, student = pair
    x, y = batch
    nst = NeuronSelectivityTransfer(["t_stage2", "t_stage3"], ["s_stage2", "s_stage3"])
    assert (nst.weight, nst.loss_names) == (50.0, ("nst_loss",))
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), nst])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    before = weights_of(student.get_layer("s_conv1"))[0]
    logs = distiller.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["nst_loss"]) and logs["nst_loss"] > 0
    assert not np.allclose(before, weights_of(student.get_layer("s_conv1"))[0])
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(nst))
    assert isinstance(restored, NeuronSelectivityTransfer)
    assert restored.get_config() == nst.get_config()
    path = os.path.join(tmp_path, "nst.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.terms[1].get_config() == nst.get_config()
    np.testing.assert_allclose(nst_loss(loaded, x, y), nst_loss(distiller, x, y), rtol=1e-5)


def test_auto_pairs_the_deepest_stages_and_trains(batch):
    keras.utils.set_random_seed(0)
    teacher, student = make_network(8, "t"), make_network(4, "s")
    x, y = batch
    nst = NeuronSelectivityTransfer("auto", "auto")
    needs = nst.teacher_needs()
    assert not needs.cacheable and "teacher_features='auto'" in needs.reason
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), nst])
    stages = ("stage1", "stage2", "stage3")
    assert nst.teacher_features == tuple(f"t_{s}" for s in stages)
    assert nst.student_features == tuple(f"s_{s}" for s in stages)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    for _ in range(3):
        logs = distiller.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["nst_loss"])
    # One side by name: the other keeps as many of its deepest stages.
    one_side = NeuronSelectivityTransfer(["t_stage1", "t_stage3"], "auto")
    keras_unikd.Distiller(teacher, student, terms=[one_side])
    assert one_side.student_features == ("s_stage2", "s_stage3")


def test_the_teacher_maps_are_read_whole():
    needs = NeuronSelectivityTransfer(["t_stage1"], ["s_stage1"]).teacher_needs()
    assert needs.feature_maps == ("t_stage1",) and not needs.cacheable
    assert "'nst' (NeuronSelectivityTransfer)" in needs.reason


def test_bad_inputs_are_named(pair):
    with pytest.raises(ValueError, match="as many teacher_features as student_features"):
        NeuronSelectivityTransfer(["t_stage1", "t_stage2"], ["s_stage1"])
    with pytest.raises(ValueError, match="reads feature maps .*; layer 's_pool'"):
        keras_unikd.Distiller(*pair, terms=[NeuronSelectivityTransfer("t_stage3", "s_pool")])
    teacher = make_network(8, "t", input_shape=(10, 10, 1))
    student = make_network(4, "s", input_shape=(10, 10, 1))
    # 5x5 against 3x3: no integer pooling factor.
    with pytest.raises(
        ValueError, match=r"NeuronSelectivityTransfer pools .*'t_stage2' is \(5, 5\)"
    ):
        keras_unikd.Distiller(
            teacher, student, terms=[NeuronSelectivityTransfer("t_stage2", "s_stage3")]
        )
    shapes = ForwardShapes(teacher={}, student={}, num_classes=5)
    with pytest.raises(ValueError, match="'auto', which the Distiller chooses"):
        NeuronSelectivityTransfer("auto", "auto").build(shapes)
