"""Overhaul feature distillation against a NumPy re-derivation of the reference
code (megvii-research/mdistiller, distillers/OFD.py and the CIFAR ResNet's
get_bn_before_relu), on every backend."""

import math
import os

import keras
import numpy as np
import pytest
from scipy.stats import norm

import keras_unikd
from conftest import weights_of
from keras_unikd import models
from keras_unikd import terms
from keras_unikd.pre_activation import batch_norm_before
from keras_unikd.pre_activation import relu_input_path
from keras_unikd.taps import FeatureTap
from keras_unikd.terms.base import ForwardShapes
from keras_unikd.terms.ofd import OverhaulFeatureDistillation
from keras_unikd.terms.ofd import batch_norm_margins
from keras_unikd.terms.ofd import gaussian_margin

PREACTS = ["stage1_preact", "stage2_preact", "stage3_preact"]

# --- the reference, in float64 ---------------------------------------------------


def margin_reference(gamma, beta):
    """get_margin: E[x | x < 0] of N(beta, gamma^2), or -3 |gamma| when P(x < 0) <= 0.001."""
    margins = []
    for s, m in zip(gamma, beta):
        s, m = abs(float(s)), float(m)
        if norm.cdf(-m / s) > 0.001:
            margins.append(
                -s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / norm.cdf(-m / s) + m
            )
        else:
            margins.append(-3 * s)
    return np.array(margins)


def pool_to(teacher, size):
    """adaptive_avg_pool2d for integer factors: block means, or repeats to enlarge."""
    b, h, w, c = teacher.shape
    if h >= size[0]:
        f = h // size[0]
        return teacher.reshape(b, size[0], f, size[1], f, c).mean(axis=(2, 4))
    f = size[0] // h
    return teacher.repeat(f, axis=1).repeat(f, axis=2)


def ofd_reference(students, teachers, connectors, margins, weight=0.001):
    """ofd_loss: connector (1x1 conv, inference BN), teacher pooled to the student's size,
    partial L2 summed over C, H, W, mean over the batch, shallower stages halved."""
    total, count = 0.0, len(students)
    for i, (s, t, (kernel, gamma, beta, mean, var), m) in enumerate(
        zip(students, teachers, connectors, margins)
    ):
        s = (s @ kernel[0, 0] - mean) / np.sqrt(var + 1e-5) * gamma + beta
        t = pool_to(t, s.shape[1:3]) if t.shape[1:3] != s.shape[1:3] else t
        loss = (
            (s - m) ** 2 * ((s > m) & (t <= m))
            + (s - t) ** 2 * ((s > t) & (t > m) & (t <= 0))
            + (s - t) ** 2 * (t > 0)
        )
        total += np.abs(loss).mean(axis=0).sum() / 2 ** (count - i - 1)
    return weight * total


def maps(model, paths, x):
    _, features = FeatureTap(model, paths)(x)
    return [np.asarray(keras.ops.convert_to_numpy(f), "float64") for f in features]


def numpy64(variables):
    return [np.asarray(keras.ops.convert_to_numpy(v), "float64") for v in variables]


def randomize(layer, rng, scale=1.0):
    """Random BatchNormalization weights (some gammas negative, some betas large)."""
    for variable in layer.weights:
        values = rng.normal(size=variable.shape) * scale
        if "variance" in variable.name:
            values = np.abs(values) + 0.5
        variable.assign(values.astype("float32"))


def ofd_loss(distiller, x, y, sample_weight=None):
    losses = distiller.compute_distillation_losses(
        x, y, sample_weight=sample_weight, training=False
    )[1]
    return float(keras.ops.convert_to_numpy(losses["ofd_loss"]))


def relu_network(width, name, input_shape=(12, 12, 1)):
    """Two conv-BN-ReLU stages with ReLU layers: `<name>_stage{k}_preact` is the BN."""
    inputs = keras.Input(input_shape)
    x = inputs
    for k in (1, 2):
        x = keras.layers.Conv2D(width * k, 3, strides=k, padding="same", name=f"{name}_conv{k}")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_stage{k}_preact")(x)
        x = keras.layers.ReLU(name=f"{name}_stage{k}")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name=f"{name}_logits")(x), name=name)


@pytest.fixture
def relu_pair():
    keras.utils.set_random_seed(0)
    return relu_network(8, "t"), relu_network(4, "s")


# --- the margins -------------------------------------------------------------------


def test_the_batch_norm_before_a_cifar_resnet_preact_is_the_residual_branch():
    """The zoo's `stage{k}_preact` (the residual sum) gets the last block's bn2, as the
    reference's get_bn_before_relu: resnet8x4's one block per stage has a BN on its
    shortcut too, resnet32x4's last (fifth) block an identity shortcut."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(3)
    for name, last_block in (("resnet8x4", 0), ("resnet32x4", 4)):
        model = models.get_model(name, num_classes=5, input_shape=(8, 8, 3))
        for k, preact in enumerate(PREACTS, start=1):
            assert isinstance(model.get_layer(preact), keras.layers.Add)
            bn = batch_norm_before(model, preact)
            assert bn.name == f"s{k}_b{last_block}_2_bn"
            assert relu_input_path(model, f"stage{k}") == preact
            randomize(bn, rng)
            np.testing.assert_allclose(
                batch_norm_margins(bn), margin_reference(*numpy64([bn.gamma, bn.beta])), rtol=1e-9
            )


def test_margins_are_the_reference(pair):
    teacher, student = pair
    bn = teacher.get_layer("t_stage1_preact")
    gamma = np.array([1.0, -2.0, 0.5, 1.0, 3.0, 0.1, -1.0, 2.0], "float32")
    beta = np.array([0.0, 1.0, -1.0, 5.0, 0.5, -0.3, 2.9, 0.0], "float32")  # [3]: -3 |gamma|
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    ofd = OverhaulFeatureDistillation("t_stage1_preact", "s_stage1_preact")
    keras_unikd.Distiller(teacher, student, terms=[ofd])
    expected = margin_reference(gamma, beta)
    assert expected[3] == -3.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ofd.margins[0]), expected, rtol=1e-6)
    assert not ofd.margins[0].trainable
    # Without gamma (scale=False) the std is 1, without beta the mean 0; at std 0
    # (where the reference divides by zero) the limit min(mean, 0).
    bare = keras.layers.BatchNormalization(scale=False, center=False)
    bare.build((None, 2, 2, 3))
    np.testing.assert_allclose(batch_norm_margins(bare), -math.sqrt(2 / math.pi))
    assert (gaussian_margin(0.0, -1.5), gaussian_margin(0.0, 2.0)) == (-1.5, 0.0)


# --- the loss ----------------------------------------------------------------------


def test_ofd_loss_is_the_reference(relu_pair, batch):
    teacher, student = relu_pair
    x, y = batch
    rng = np.random.default_rng(1)
    # The teacher's stage 1 (12x12) pooled to the student's stage 2 (6x6), its
    # stage 2 (6x6) enlarged to the student's stage 1 (12x12).
    t_paths, s_paths = (
        ["t_stage1_preact", "t_stage2_preact"],
        ["s_stage2_preact", "s_stage1_preact"],
    )
    bns = [teacher.get_layer(path) for path in t_paths]
    for bn in bns:
        randomize(bn, rng)
    ofd = OverhaulFeatureDistillation(t_paths, s_paths)
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), ofd])
    for connector in ofd.connectors:
        randomize(connector.get_layer("bn"), rng, scale=0.5)
    margins = [margin_reference(*numpy64([bn.gamma, bn.beta])) for bn in bns]
    connectors = [
        numpy64([c.get_layer("conv").kernel, *c.get_layer("bn").weights]) for c in ofd.connectors
    ]
    expected = ofd_reference(
        maps(student, s_paths, x), maps(teacher, t_paths, x), connectors, margins
    )
    np.testing.assert_allclose(ofd_loss(distiller, x, y), expected, rtol=2e-5)


def test_sample_weights_weight_the_examples(pair, batch):
    teacher, student = pair
    x, y = batch
    ofd = OverhaulFeatureDistillation("t_stage1_preact", "s_stage1_preact")
    distiller = keras_unikd.Distiller(teacher, student, terms=[ofd])
    plain = ofd_loss(distiller, x, y)
    np.testing.assert_allclose(ofd_loss(distiller, x, y, np.ones(len(x), "float32")), plain)
    weights = np.zeros(len(x), "float32")
    weights[:4] = 1.0
    first = ofd_loss(distiller, x[:4], y[:4])
    np.testing.assert_allclose(ofd_loss(distiller, x, y, weights), first * 4 / len(x), rtol=1e-5)


# --- training, saving -----------------------------------------------------------


def test_the_term_trains_the_student_saves_and_loads(pair, batch, tmp_path):
    teacher, student = pair
    x, y = batch
    randomize(teacher.get_layer("t_stage1_preact"), np.random.default_rng(2))
    ofd = OverhaulFeatureDistillation("t_stage1_preact", "s_stage1_preact")
    assert (ofd.weight, ofd.kernel_size, ofd.loss_names) == (0.001, 1, ("ofd_loss",))
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), ofd])
    margin = np.array(keras.ops.convert_to_numpy(ofd.margins[0]))
    # The reference's normal_(0, sqrt(2 / (k * k * out_channels))).
    init = ofd.connectors[0].get_layer("conv").kernel_initializer.get_config()
    assert (init["scale"], init["mode"], init["distribution"]) == (
        2.0,
        "fan_out",
        "untruncated_normal",
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    before = weights_of(student.get_layer("s_conv1"))[0]
    moving = np.array(keras.ops.convert_to_numpy(ofd.connectors[0].get_layer("bn").moving_variance))
    logs = distiller.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["ofd_loss"]) and logs["ofd_loss"] > 0
    assert not np.allclose(before, weights_of(student.get_layer("s_conv1"))[0])
    # The connector's BN trains on batch statistics; the margins stay.
    after = keras.ops.convert_to_numpy(ofd.connectors[0].get_layer("bn").moving_variance)
    assert not np.allclose(moving, after)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ofd.margins[0]), margin)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ofd))
    assert isinstance(restored, OverhaulFeatureDistillation)
    assert restored.get_config() == ofd.get_config()
    path = os.path.join(tmp_path, "ofd.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.terms[1].get_config() == ofd.get_config()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.terms[1].margins[0]),
        keras.ops.convert_to_numpy(ofd.margins[0]),
    )
    np.testing.assert_allclose(ofd_loss(loaded, x, y), ofd_loss(distiller, x, y), rtol=1e-6)


def test_auto_taps_the_relu_inputs_and_trains(relu_pair, batch):
    teacher, student = relu_pair
    x, y = batch
    ofd = OverhaulFeatureDistillation("auto", "auto")
    needs = ofd.teacher_needs()
    assert not needs.cacheable and "teacher_features='auto'" in needs.reason
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), ofd])
    assert ofd.teacher_features == ("t_stage1_preact", "t_stage2_preact")
    assert ofd.student_features == ("s_stage1_preact", "s_stage2_preact")
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    for _ in range(2):
        logs = distiller.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["ofd_loss"])
    # One side by name: the other keeps as many of its deepest stages.
    one_side = OverhaulFeatureDistillation(["t_stage1_preact"], "auto")
    keras_unikd.Distiller(teacher, student, terms=[one_side])
    assert one_side.student_features == ("s_stage2_preact",)


def test_auto_needs_relu_layers(pair):
    # The tiny pair's stage 2 is a convolution with activation="relu".
    with pytest.raises(
        ValueError,
        match=r"'auto' reads the input of each stage end's ReLU: "
        r"Layer 't_stage2' \(Conv2D\) is not a ReLU layer",
    ):
        keras_unikd.Distiller(*pair, terms=[OverhaulFeatureDistillation("auto", "auto")])


def test_the_teacher_maps_are_read_whole():
    needs = OverhaulFeatureDistillation(["t_stage1_preact"], ["s_stage1_preact"]).teacher_needs()
    assert needs.feature_maps == ("t_stage1_preact",) and not needs.cacheable
    assert "'ofd' (OverhaulFeatureDistillation)" in needs.reason


# --- errors ---------------------------------------------------------------------


def test_bad_arguments_are_named(pair):
    with pytest.raises(ValueError, match="as many teacher_features as student_features"):
        OverhaulFeatureDistillation(["t_stage1_preact", "t_stage2"], ["s_stage1_preact"])
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        OverhaulFeatureDistillation("t_stage1_preact", "s_stage1_preact", kernel_size=2)
    with pytest.raises(ValueError, match=r"reads feature maps \(batch, H, W, C\); layer 's_pool'"):
        keras_unikd.Distiller(*pair, terms=[OverhaulFeatureDistillation("t_stage1", "s_pool")])
    # A tap with no batch normalisation before it names the layer and the fix.
    with pytest.raises(
        ValueError, match=r"Layer 't_stage2' \(Conv2D\) has no batch-normalisation statistics"
    ):
        keras_unikd.Distiller(*pair, terms=[OverhaulFeatureDistillation("t_stage2", "s_stage2")])


def test_a_cached_teacher_is_an_error():
    ofd = OverhaulFeatureDistillation("t_stage1_preact", "s_stage1_preact")
    shapes = ForwardShapes(
        teacher={"t_stage1_preact": (None, 4, 4, 8)},
        student={"s_stage1_preact": (None, 4, 4, 4)},
        num_classes=5,
    )
    with pytest.raises(ValueError, match="needs the teacher model .* the teacher is a cache's"):
        ofd.build(shapes)


def test_the_graph_questions_fail_clearly():
    inputs = keras.Input((6, 6, 4))
    a = keras.layers.BatchNormalization(name="bn_a")(keras.layers.Conv2D(4, 1, name="ca")(inputs))
    b = keras.layers.BatchNormalization(name="bn_b")(keras.layers.Conv2D(4, 1, name="cb")(inputs))
    tie = keras.layers.Add(name="tie")([a, b])
    joined = keras.layers.Concatenate(name="joined")([tie, inputs])
    relu = keras.layers.ReLU(name="first_relu")(inputs)
    out = keras.layers.ReLU(name="out")(keras.layers.Concatenate()([joined, relu]))
    inner = keras.Model(inputs, out, name="inner")
    with pytest.raises(ValueError, match="two inputs of the same depth"):
        batch_norm_before(inner, "tie")
    with pytest.raises(ValueError, match=r"'joined' \(Concatenate\) has no batch-normalisation"):
        batch_norm_before(inner, "joined")
    with pytest.raises(ValueError, match="input of ReLU layer 'first_relu' is not the output"):
        relu_input_path(inner, "first_relu")
    with pytest.raises(ValueError, match="No layer named 'missing'"):
        batch_norm_before(inner, "missing")
    # Inside a nested model, paths keep their prefix.
    outer_inputs = keras.Input((6, 6, 4))
    outer = keras.Model(outer_inputs, inner(outer_inputs))
    assert batch_norm_before(outer, "inner/bn_a").name == "bn_a"
    assert relu_input_path(outer, "inner/out").startswith("inner/concatenate")
