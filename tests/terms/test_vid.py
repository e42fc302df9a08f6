"""Variational information distillation against a NumPy re-derivation of the
reference code (megvii-research/mdistiller, distillers/VID.py), on every backend."""

import math
import os

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import make_network
from conftest import weights_of
from keras_unikd import terms
from keras_unikd.taps import FeatureTap
from keras_unikd.terms.vid import VariationalInformation
from keras_unikd.terms.vid import _common_size

# --- the reference, in float64 ---------------------------------------------------


def adaptive_pool(feature, size):
    """F.adaptive_avg_pool2d on a channels-last map: bin i averages
    floor(i * in / out) .. ceil((i + 1) * in / out) - 1 along each axis."""

    def along(x, axis, out):
        size_in = x.shape[axis]
        bins = [
            np.take(x, range(i * size_in // out, -(-(i + 1) * size_in // out)), axis=axis).mean(
                axis=axis, keepdims=True
            )
            for i in range(out)
        ]
        return np.concatenate(bins, axis=axis)

    return along(along(feature, 1, size[0]), 2, size[1])


def vid_reference(student, teacher, kernels, log_scale, eps=1e-5):
    """vid_loss: pool the larger map, regress, Gaussian negative log-likelihood, mean."""
    if student.shape[1] > teacher.shape[1]:
        student = adaptive_pool(student, teacher.shape[1:3])
    elif student.shape[1] < teacher.shape[1]:
        teacher = adaptive_pool(teacher, student.shape[1:3])
    mean = student
    for position, kernel in enumerate(kernels):
        mean = mean @ kernel[0, 0]
        if position < 2:
            mean = np.maximum(mean, 0.0)
    variance = np.log(1.0 + np.exp(log_scale)) + eps
    return np.mean(0.5 * ((mean - teacher) ** 2 / variance + np.log(variance)))


def maps(model, paths, x):
    _, features = FeatureTap(model, paths)(x)
    return [np.asarray(keras.ops.convert_to_numpy(f), "float64") for f in features]


def vid_loss(distiller, x, y, sample_weight=None):
    losses = distiller.compute_distillation_losses(
        x, y, sample_weight=sample_weight, training=False
    )[1]
    return float(keras.ops.convert_to_numpy(losses["vid_loss"]))


# --- the loss ----------------------------------------------------------------------


def test_vid_loss_is_the_reference(pair, batch):
    teacher, student = pair
    x, y = batch
    # Stages of 12, 6 and 3 pixels: the teacher's 12 pooled to the student's 6,
    # the student's 12 to the teacher's 3, the teacher's 6 to the student's 3.
    t_paths, s_paths = ["t_stage1", "t_stage3", "t_stage2"], ["s_stage2", "s_stage1", "s_stage3"]
    vid = VariationalInformation(t_paths, s_paths, learn_variance=True)
    distiller = keras_unikd.Distiller(teacher, student, terms=[vid])
    rng = np.random.default_rng(1)
    for alpha in vid.log_scales:  # other variances than the initial 5
        alpha.assign(rng.normal(size=alpha.shape).astype("float32"))
    expected = sum(
        vid_reference(
            s,
            t,
            [np.asarray(keras.ops.convert_to_numpy(w), "float64") for w in regressor.weights],
            np.asarray(keras.ops.convert_to_numpy(alpha), "float64"),
        )
        for s, t, regressor, alpha in zip(
            maps(student, s_paths, x), maps(teacher, t_paths, x), vid.regressors, vid.log_scales
        )
    )
    np.testing.assert_allclose(vid_loss(distiller, x, y), expected, rtol=1e-5)


def test_the_reference_settings(pair):
    vid = VariationalInformation(["t_stage1"], ["s_stage1"])
    assert (vid.weight, vid.eps, vid.init_pred_var, vid.learn_variance) == (1.0, 1e-5, 5.0, False)
    keras_unikd.Distiller(*pair, terms=[vid])
    # log(exp(5 - eps) - 1): the variance starts at 5 exactly.
    alpha = keras.ops.convert_to_numpy(vid.log_scales[0])
    np.testing.assert_allclose(alpha, math.log(math.exp(5.0 - 1e-5) - 1.0), rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(vid.variances()[0]), 5.0, rtol=1e-6)
    assert not vid.log_scales[0].trainable
    # Three bias-free 1x1 convolutions: 4 -> 8 -> 8 -> 8, PyTorch's default init.
    kernels = weights_of(vid.regressors[0])
    assert [k.shape for k in kernels] == [(1, 1, 4, 8), (1, 1, 8, 8), (1, 1, 8, 8)]
    for kernel in kernels:
        assert np.abs(kernel).max() <= 1.0 / math.sqrt(kernel.shape[2])
    assert not np.allclose(kernels[1], kernels[2])


def test_sample_weights_weight_the_examples(pair, batch):
    teacher, student = pair
    x, y = batch
    vid = VariationalInformation(["t_stage2"], ["s_stage2"])
    distiller = keras_unikd.Distiller(teacher, student, terms=[vid])
    plain = vid_loss(distiller, x, y)
    ones = vid_loss(distiller, x, y, np.ones(len(x), "float32"))
    weights = np.zeros(len(x), "float32")
    weights[:4] = 1.0
    half = vid_loss(distiller, x, y, weights)
    np.testing.assert_allclose(ones, plain, rtol=1e-6)
    first = vid_loss(keras_unikd.Distiller(teacher, student, terms=[vid]), x[:4], y[:4])
    np.testing.assert_allclose(half, first * 4 / len(x), rtol=1e-5)


# --- training, saving -----------------------------------------------------------


@pytest.mark.parametrize("learn_variance", [False, True])
def test_the_term_trains_the_student_saves_and_loads(pair, batch, tmp_path, learn_variance):
    teacher, student = pair
    x, y = batch
    vid = VariationalInformation(
        ["t_stage2", "t_stage3"], ["s_stage2", "s_stage3"], learn_variance=learn_variance
    )
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), vid])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    before = weights_of(student.get_layer("s_conv1"))[0]
    regressor = weights_of(vid.regressors[0])[0]
    alpha = np.array(keras.ops.convert_to_numpy(vid.log_scales[-1]))
    logs = distiller.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["vid_loss"]) and logs["vid_loss"] > 0
    assert not np.allclose(before, weights_of(student.get_layer("s_conv1"))[0])
    assert not np.allclose(regressor, weights_of(vid.regressors[0])[0])
    # The reference never updates the variance; the paper learns it.
    assert np.array_equal(alpha, keras.ops.convert_to_numpy(vid.log_scales[-1])) != learn_variance
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vid))
    assert isinstance(restored, VariationalInformation)
    assert restored.get_config() == vid.get_config()
    if learn_variance:
        return
    path = os.path.join(tmp_path, "vid.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.terms[1].get_config() == vid.get_config()
    np.testing.assert_allclose(vid_loss(loaded, x, y), vid_loss(distiller, x, y), rtol=1e-6)


def test_auto_pairs_the_deepest_stages_and_trains(batch):
    keras.utils.set_random_seed(0)
    teacher, student = make_network(8, "t"), make_network(4, "s")
    x, y = batch
    vid = VariationalInformation("auto", "auto")
    assert vid.get_config()["teacher_features"] == "auto"
    needs = vid.teacher_needs()
    assert not needs.cacheable and "teacher_features='auto'" in needs.reason
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), vid])
    stages = ("stage1", "stage2", "stage3")
    assert vid.teacher_features == tuple(f"t_{s}" for s in stages)
    assert vid.student_features == tuple(f"s_{s}" for s in stages)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    for _ in range(3):
        logs = distiller.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["vid_loss"])


def test_the_teacher_maps_are_read_whole():
    needs = VariationalInformation(["t_stage1"], ["s_stage1"]).teacher_needs()
    assert needs.feature_maps == ("t_stage1",) and not needs.cacheable
    assert "'vid' (VariationalInformation)" in needs.reason


# --- errors ---------------------------------------------------------------------


def test_bad_arguments_are_named(pair):
    with pytest.raises(ValueError, match="as many teacher_features as student_features"):
        VariationalInformation(["t_stage1", "t_stage2"], ["s_stage1"])
    with pytest.raises(ValueError, match="init_pred_var must be > eps"):
        VariationalInformation("t_stage1", "s_stage1", init_pred_var=1e-6)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        VariationalInformation("t_stage1", "s_stage1", eps=-1.0)
    with pytest.raises(ValueError, match="learn_variance must be True or False"):
        VariationalInformation("t_stage1", "s_stage1", learn_variance="yes")
    with pytest.raises(ValueError, match=r"reads feature maps \(batch, H, W, C\); layer 's_pool'"):
        keras_unikd.Distiller(*pair, terms=[VariationalInformation("t_stage1", "s_pool")])
    with pytest.raises(ValueError, match="neither is the smaller in both height and width"):
        _common_size("t", (None, 4, 8, 3), "s", (None, 8, 4, 3))
