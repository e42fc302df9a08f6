"""The terms API: built-in terms against NumPy, the keyword form, custom terms, taps, schedules."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import keras_unikd
from conftest import make_network
from conftest import weights_of
from keras_unikd import terms
from keras_unikd.terms import ForwardRecord
from keras_unikd.terms import ForwardShapes
from test_losses import np_dkd
from test_losses import np_gaussian_kl
from test_losses import np_kd
from test_losses import np_log_softmax
from test_losses import np_standardize

RNG = np.random.default_rng(7)
STUDENT_FEATURES = ["s_stage1", "s_stage2", "s_stage3", "s_pool"]


def array(*shape, scale=2.0):
    return (RNG.standard_normal(shape) * scale).astype("float32")


def record(teacher_features=None, student_features=None, epoch=1.0, training=False, **kwargs):
    values = dict(
        teacher_logits=array(6, 5),
        student_logits=array(6, 5),
        teacher_features=teacher_features or {},
        student_features=student_features or {},
        labels=np.array([0, 1, 2, 3, 4, 0], "int32"),
        sample_weight=None,
        training=training,
        step=0.0,
        epoch=epoch,
    )
    values.update(kwargs)
    return ForwardRecord(**values)


def value(tensor):
    return float(ops.convert_to_numpy(tensor))


# --- built-in terms against NumPy --------------------------------------------


def test_cross_entropy_kd_and_dkd_match_numpy():
    r = record()
    labels = r.labels
    log_p = np_log_softmax(r.student_logits.astype("float64"))
    expected_ce = -log_p[np.arange(6), labels].mean()
    assert value(terms.CrossEntropy(weight=0.5)(r)["ce_loss"]) == pytest.approx(
        0.5 * expected_ce, rel=1e-5
    )
    kd = terms.KD(temperature=3.0, weight=2.0)(r)["kd_loss"]
    assert value(kd) == pytest.approx(
        2.0 * np_kd(r.student_logits, r.teacher_logits, 3.0), rel=1e-5
    )
    dkd = terms.DKD(alpha=0.5, beta=6.0, temperature=2.0, warmup_epochs=0)(r)["dkd_loss"]
    expected = np_dkd(r.student_logits, r.teacher_logits, labels, 0.5, 6.0, 2.0)
    assert value(dkd) == pytest.approx(expected, rel=1e-4)


def test_warmup_factor_follows_the_epoch():
    term = terms.DKD(warmup_epochs=4)
    r = record()
    full = np_dkd(r.student_logits, r.teacher_logits, r.labels, 1.0, 8.0, 4.0)
    for epoch, factor in ((1.0, 0.25), (3.0, 0.75), (4.0, 1.0), (10.0, 1.0)):
        got = value(
            term(
                record(
                    epoch=epoch, teacher_logits=r.teacher_logits, student_logits=r.student_logits
                )
            )["dkd_loss"]
        )
        assert got == pytest.approx(factor * full, rel=1e-4), epoch


def test_unikd_features_closed_form_matches_numpy():
    teacher_map, student_map, pooled = array(6, 4, 4, 3), array(6, 4, 4, 2), array(6, 7)
    term = terms.UniKDFeatures(
        teacher_features="t_map",
        student_features=["s_map", "s_pool"],
        distribution_loss="gaussian",
        feature_weight=2.0,
        consistency_weight=0.5,
        temperature=2.0,
    )
    term.build(
        ForwardShapes(
            teacher={"t_map": (None, 4, 4, 3)},
            student={"s_map": (None, 4, 4, 2), "s_pool": (None, 7)},
            num_classes=5,
        )
    )
    r = record({"t_map": teacher_map}, {"s_map": student_map, "s_pool": pooled})
    out = term(r)
    # The teacher's head reads its pooled map; the student's the fused map.
    fused = ops.convert_to_numpy(term.student_aggregator([student_map, pooled]))
    assert fused.shape == (6, 4, 4, 3)

    def head(layer, feature):
        pooled_feature = feature.mean(axis=(1, 2))
        mean_kernel, mean_bias, var_kernel, var_bias = (
            ops.convert_to_numpy(w) for w in layer.weights
        )
        return pooled_feature @ mean_kernel + mean_bias, pooled_feature @ var_kernel + var_bias

    mu_t, lv_t = head(term.teacher_head, teacher_map)
    mu_s, lv_s = head(term.student_head, fused)
    expected_feature = 2.0 * np_gaussian_kl(mu_s, lv_s, mu_t, lv_t)
    expected_consistency = 0.5 * (
        np_kd(mu_s, r.student_logits, 2.0) + np_kd(mu_t, r.teacher_logits, 2.0)
    )
    assert value(out["feature_loss"]) == pytest.approx(expected_feature, rel=1e-4)
    assert value(out["consistency_loss"]) == pytest.approx(expected_consistency, rel=1e-4)


def test_unikd_features_sample_only_in_training():
    term = terms.UniKDFeatures("t", "s", seed=3)
    term.build(ForwardShapes(teacher={"t": (None, 8)}, student={"s": (None, 8)}, num_classes=5))
    features = ({"t": array(6, 8)}, {"s": array(6, 8)})
    logits = dict(teacher_logits=array(6, 5), student_logits=array(6, 5))
    evaluation = [value(term(record(*features, **logits))["feature_loss"]) for _ in range(2)]
    training = [
        value(term(record(*features, training=True, **logits))["feature_loss"]) for _ in range(2)
    ]
    assert evaluation[0] == evaluation[1]
    assert training[0] != training[1] and evaluation[0] not in training


def test_kd_and_dkd_with_logit_standardization_match_numpy():
    r = record()
    zs, zt = np_standardize(r.student_logits), np_standardize(r.teacher_logits)
    kd = terms.KD(temperature=2.0, weight=9.0, logit_standardization=True)(r)["kd_loss"]
    assert value(kd) == pytest.approx(9.0 * np_kd(zs, zt, 2.0), rel=1e-5)
    dkd = terms.DKD(
        alpha=1.0,
        beta=8.0,
        temperature=2.0,
        weight=9.0,
        warmup_epochs=0,
        logit_standardization=True,
    )(r)["dkd_loss"]
    assert value(dkd) == pytest.approx(9.0 * np_dkd(zs, zt, r.labels, 1.0, 8.0, 2.0), rel=1e-4)
    # Scale and shift of either network's logits do not move the loss.
    moved = record(
        teacher_logits=5.0 * r.teacher_logits - 2.0,
        student_logits=0.3 * r.student_logits + 1.0,
        labels=r.labels,
    )
    for term, name in (
        (terms.KD(logit_standardization=True), "kd_loss"),
        (terms.DKD(warmup_epochs=0, logit_standardization=True), "dkd_loss"),
    ):
        assert value(term(moved)[name]) == pytest.approx(value(term(r)[name]), rel=1e-4)
        same = record(teacher_logits=r.student_logits, student_logits=r.student_logits)
        assert value(term(same)[name]) == pytest.approx(0.0, abs=1e-6)


def unikd_term_and_heads(distribution_loss, **kwargs):
    term = terms.UniKDFeatures(
        teacher_features="t_vec",
        student_features="s_vec",
        distribution_loss=distribution_loss,
        feature_weight=2.0,
        consistency_weight=0.5,
        temperature=2.0,
        **kwargs,
    )
    term.build(
        ForwardShapes(teacher={"t_vec": (None, 8)}, student={"s_vec": (None, 7)}, num_classes=5)
    )

    def head(layer, feature):
        mean_kernel, mean_bias, var_kernel, var_bias = (
            ops.convert_to_numpy(w) for w in layer.weights
        )
        return feature @ mean_kernel + mean_bias, feature @ var_kernel + var_bias

    return term, head


@pytest.mark.parametrize("distribution_loss", ["sampled", "gaussian"])
def test_unikd_features_with_logit_standardization_match_numpy(distribution_loss):
    term, head = unikd_term_and_heads(distribution_loss, logit_standardization=True)
    teacher_feature, student_feature = array(6, 8), array(6, 7)
    r = record({"t_vec": teacher_feature}, {"s_vec": student_feature})
    out = term(r)  # training=False: the heads do not sample, z = mu
    mu_t, lv_t = head(term.teacher_head, teacher_feature)
    mu_s, lv_s = head(term.student_head, student_feature)
    if distribution_loss == "sampled":
        expected_feature = 2.0 * np_kd(np_standardize(mu_s), np_standardize(mu_t), 2.0)
    else:  # the closed form takes no softmax: standardization does not apply
        expected_feature = 2.0 * np_gaussian_kl(mu_s, lv_s, mu_t, lv_t)
    expected_consistency = 0.5 * (
        np_kd(np_standardize(mu_s), np_standardize(r.student_logits), 2.0)
        + np_kd(np_standardize(mu_t), np_standardize(r.teacher_logits), 2.0)
    )
    assert value(out["feature_loss"]) == pytest.approx(expected_feature, rel=1e-4)
    assert value(out["consistency_loss"]) == pytest.approx(expected_consistency, rel=1e-4)
    plain, _ = unikd_term_and_heads(distribution_loss)
    plain.set_weights(term.get_weights())
    assert value(plain(r)["consistency_loss"]) != pytest.approx(expected_consistency, rel=1e-3)


def test_logit_standardization_is_serialized_and_checked():
    for term in (
        terms.KD(logit_standardization=True),
        terms.DKD(logit_standardization=True),
        terms.UniKDFeatures("t", "s", logit_standardization=True),
    ):
        config = term.get_config()
        assert config["logit_standardization"] is True
        assert type(term).from_config(config).logit_standardization is True
        config.pop("logit_standardization")  # a config saved before the option
        assert type(term).from_config(config).logit_standardization is False
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
        assert restored.logit_standardization is True
    for build in (
        lambda: terms.KD(logit_standardization="yes"),
        lambda: terms.DKD(logit_standardization=1),
        lambda: terms.UniKDFeatures("t", "s", logit_standardization=None),
    ):
        with pytest.raises(ValueError, match="logit_standardization must be True or False"):
            build()


def constant_logits_student(width=4):
    """`make_network` with a zero classifier: every logit vector is constant (std 0)."""
    student = make_network(width, "s")
    classifier = student.get_layer("s_logits")
    classifier.set_weights([np.zeros_like(w) for w in classifier.get_weights()])
    return student


def test_a_constant_student_trains_finitely_with_logit_standardization(batch):
    x, y = batch
    keras.utils.set_random_seed(0)
    teacher = make_network(8, "t")
    for term_list in (
        [terms.KD(temperature=2.0, weight=9.0, logit_standardization=True)],
        [terms.DKD(temperature=2.0, warmup_epochs=0, logit_standardization=True)],
        [
            terms.UniKDFeatures(
                "t_stage1", ["s_stage1", "s_pool"], seed=0, logit_standardization=True
            )
        ],
    ):
        student = constant_logits_student()
        logits = ops.convert_to_numpy(student(x))
        assert np.ptp(logits) == 0.0
        distiller = keras_unikd.Distiller(
            teacher, student, terms=[terms.CrossEntropy(), *term_list], steps_per_epoch=1
        )
        _, losses, _ = distiller.compute_distillation_losses(x, y, training=True)
        assert all(np.isfinite(value(loss)) for loss in losses.values())
        distiller.compile(optimizer=keras.optimizers.SGD(1e-3))
        logs = distiller.train_on_batch(x, y, return_dict=True)
        assert all(np.isfinite(v) for v in logs.values()), logs
        assert all(np.all(np.isfinite(w)) for w in weights_of(student))
        assert np.ptp(ops.convert_to_numpy(student(x))) > 0.0  # the classifier moved


def test_fitnet_hint_matches_numpy():
    term = terms.FitNetHint("t_map", "s_map", weight=10.0)
    term.build(
        ForwardShapes(
            teacher={"t_map": (None, 2, 2, 3)}, student={"s_map": (None, 4, 4, 2)}, num_classes=5
        )
    )
    teacher_map, student_map = array(6, 2, 2, 3), array(6, 4, 4, 2)
    kernel, bias = (ops.convert_to_numpy(w) for w in term.regressor.weights)
    guided = (student_map @ kernel[0, 0] + bias)[:, ::2, ::2]  # nearest 4 -> 2
    expected = 10.0 * ((guided - teacher_map) ** 2).mean()
    got = value(term(record({"t_map": teacher_map}, {"s_map": student_map}))["hint_loss"])
    assert got == pytest.approx(expected, rel=1e-4)


# --- the Distiller with terms ------------------------------------------------


def keyword_and_terms_distillers(pair):
    teacher, student = pair
    keyword = keras_unikd.Distiller(
        teacher,
        student,
        teacher_features=["t_stage1_preact"],
        student_features=STUDENT_FEATURES,
        distribution_loss="gaussian",
        ce_weight=0.5,
        logits_weight=2.0,
        feature_weight=3.0,
        consistency_weight=0.25,
        temperature=3.0,
        dkd_beta=6.0,
        warmup_epochs=4,
        seed=0,
    )
    student_copy = keras.models.clone_model(student)
    student_copy.set_weights(student.get_weights())
    explicit = keras_unikd.Distiller(
        teacher,
        student_copy,
        terms=[
            terms.CrossEntropy(weight=0.5),
            terms.DKD(beta=6.0, temperature=3.0, weight=2.0, warmup_epochs=4),
            terms.UniKDFeatures(
                teacher_features="t_stage1_preact",
                student_features=STUDENT_FEATURES,
                distribution_loss="gaussian",
                feature_weight=3.0,
                consistency_weight=0.25,
            ),
        ],
    )
    for source, target in zip(keyword.terms, explicit.terms):
        target.set_weights(source.get_weights())
    return keyword, explicit


def test_keyword_form_and_terms_give_the_same_losses_and_update(pair, batch):
    x, y = batch
    keyword, explicit = keyword_and_terms_distillers(pair)
    for distiller in (keyword, explicit):
        distiller.steps_per_epoch.assign(4.0)
        distiller.training_step.assign(5.0)  # epoch 2 of a 4-epoch warm-up
    expected = keyword.compute_distillation_losses(x, y, training=False)[1]
    actual = explicit.compute_distillation_losses(x, y, training=False)[1]
    assert (
        list(expected)
        == list(actual)
        == ["ce_loss", "dkd_loss", "feature_loss", "consistency_loss"]
    )
    for name in expected:
        assert value(actual[name]) == pytest.approx(value(expected[name]), rel=1e-6), name
    for distiller in (keyword, explicit):
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        distiller.train_on_batch(x, y)
    for a, b in zip(weights_of(keyword.student), weights_of(explicit.student)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(weights_of(keyword.terms[2]), weights_of(explicit.terms[2])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


class CountingReLU(keras.layers.ReLU):
    """A ReLU that counts its calls (eager runs only)."""

    calls = 0

    def call(self, inputs):
        CountingReLU.calls += 1
        return super().call(inputs)


def counting_network(width, name):
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_conv")(inputs)
    x = CountingReLU(name=f"{name}_stage1")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x), name=name)


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="counts calls in an eager step, which JAX dispatches op by op (~40 s); the tap "
    "union is the same Python code on every backend",
)
def test_two_terms_tapping_one_layer_share_one_forward_pass(batch):
    x, y = batch
    teacher, student = counting_network(8, "t"), counting_network(4, "s")
    distiller = keras_unikd.Distiller(
        teacher,
        student,
        terms=[
            terms.CrossEntropy(),
            terms.UniKDFeatures("t_stage1", ["s_stage1", "s_pool"], distribution_loss="gaussian"),
            terms.FitNetHint("t_stage1", "s_stage1", weight=1.0),
        ],
    )
    assert distiller._student_tap.feature_paths == ("s_stage1", "s_pool")
    assert tuple(distiller.teacher_source.feature_shapes) == ("t_stage1",)
    distiller.compile(optimizer="sgd", run_eagerly=True)
    CountingReLU.calls = 0
    distiller.train_on_batch(x, y)
    assert CountingReLU.calls == 2  # one student pass and one teacher pass


class AttentionTransfer(terms.DistillationTerm):
    """A term of our own, with a trainable projection of the student's map."""

    def __init__(self, teacher_feature, student_feature, **kwargs):
        super().__init__(**kwargs)
        self.teacher_features = (teacher_feature,)
        self.student_features = (student_feature,)

    def build(self, shapes):
        channels = shapes.teacher[self.teacher_features[0]][-1]
        self.projection = keras.layers.Conv2D(channels, 1, name="projection")
        self.projection.build(shapes.student[self.student_features[0]])

    def call(self, record):
        def attention(feature):
            energy = ops.mean(ops.square(ops.cast(feature, "float32")), axis=-1)
            energy = ops.reshape(energy, (ops.shape(energy)[0], -1))
            return energy / (ops.norm(energy, axis=-1, keepdims=True) + 1e-6)

        teacher = attention(record.teacher_features[self.teacher_features[0]])
        student = attention(self.projection(record.student_features[self.student_features[0]]))
        return {self.loss_names[0]: ops.mean(ops.sum(ops.square(student - teacher), axis=-1))}

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_feature": self.teacher_features[0],
            "student_feature": self.student_features[0],
        }


def test_a_custom_term_trains_saves_and_loads(pair, batch, tmp_path):
    x, y = batch
    teacher, student = pair
    keras.saving.get_custom_objects()["AttentionTransfer"] = AttentionTransfer
    try:
        distiller = keras_unikd.Distiller(
            teacher,
            student,
            terms=[
                terms.CrossEntropy(),
                AttentionTransfer("t_stage1", "s_stage1", weight=10.0, name="at"),
            ],
        )
        assert distiller.loss_term_names == ["ce_loss", "at_loss"]
        projection = distiller.terms[1].projection
        assert {id(w) for w in projection.trainable_weights} <= {
            id(w) for w in distiller.trainable_weights
        }
        before = weights_of(projection)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert history.history["at_loss"][0] > 0
        assert not np.array_equal(before[0], weights_of(projection)[0])
        path = os.path.join(tmp_path, "at.keras")
        distiller.save(path)
        loaded = keras.models.load_model(path)
        assert isinstance(loaded.terms[1], AttentionTransfer)
        for a, b in zip(weights_of(projection), weights_of(loaded.terms[1].projection)):
            np.testing.assert_array_equal(a, b)
        expected = distiller.compute_distillation_losses(x, y, training=False)[1]["at_loss"]
        assert value(
            loaded.compute_distillation_losses(x, y, training=False)[1]["at_loss"]
        ) == pytest.approx(value(expected), rel=1e-6)
    finally:
        del keras.saving.get_custom_objects()["AttentionTransfer"]


# --- schedules ---------------------------------------------------------------


class Probe(terms.DistillationTerm):
    """Reports 1, so its logged loss is its schedule factor."""

    def call(self, record):
        return {self.loss_names[0]: ops.ones(())}


def probe_distiller(pair, steps_per_epoch=None):
    return keras_unikd.Distiller(
        *pair,
        terms=[terms.CrossEntropy(), Probe(warmup_epochs=3, name="probe")],
        steps_per_epoch=steps_per_epoch,
    )


def test_warmup_factors_agree_under_fit_train_on_batch_and_a_loop(pair, batch):
    x, y = batch  # 16 examples: 2 steps of 8 per epoch
    teacher, student = pair
    expected = [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0]

    class BatchLogs(keras.callbacks.Callback):
        factors = []

        def on_train_batch_end(self, batch, logs=None):
            BatchLogs.factors.append(float(logs["probe_loss"]))

    fitted = probe_distiller((teacher, student))
    fitted.compile(optimizer="sgd")
    fitted.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=[BatchLogs()])
    np.testing.assert_allclose(BatchLogs.factors, expected, rtol=1e-6)

    stepped = probe_distiller((teacher, keras.models.clone_model(student)), steps_per_epoch=2)
    stepped.compile(optimizer="sgd")
    factors = [
        stepped.train_on_batch(x[i : i + 8], y[i : i + 8], return_dict=True)["probe_loss"]
        for _ in range(4)
        for i in (0, 8)
    ]
    np.testing.assert_allclose(factors, expected, rtol=1e-6)

    looped = probe_distiller((teacher, keras.models.clone_model(student)), steps_per_epoch=2)
    factors = []
    for _ in range(4):
        for i in (0, 8):
            y_pred = looped(x[i : i + 8], training=True)
            looped.compute_loss(x[i : i + 8], y[i : i + 8], y_pred, training=True)
            factors.append(
                float(ops.convert_to_numpy(looped.loss_term_trackers["probe_loss"].result()))
            )
            looped.loss_term_trackers["probe_loss"].reset_state()
    np.testing.assert_allclose(factors, expected, rtol=1e-6)


def test_a_warmup_longer_than_the_run_warns(pair, batch):
    x, y = batch
    distiller = probe_distiller(pair)
    distiller.compile(optimizer="sgd")
    with pytest.warns(
        UserWarning, match=r"'probe' warms up over 3 epochs but the training runs 2.*67%"
    ):
        distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    fresh = probe_distiller(pair)
    fresh.compile(optimizer="sgd")
    with pytest.warns(UserWarning, match="steps_per_epoch is unknown"):
        fresh.train_on_batch(x, y)


# --- the student's own losses --------------------------------------------------


class PenalisedIdentity(keras.layers.Layer):
    def call(self, inputs):
        self.add_loss(0.5 * ops.mean(ops.square(inputs)))
        return inputs


def test_activity_regularizers_and_add_loss_are_the_regularization_loss(batch):
    x, y = batch
    inputs = keras.Input((12, 12, 1))
    hidden = keras.layers.Flatten()(inputs)
    hidden = keras.layers.Dense(6, activity_regularizer=keras.regularizers.L2(0.01), name="act")(
        hidden
    )
    hidden = PenalisedIdentity()(hidden)
    student = keras.Model(inputs, keras.layers.Dense(5)(hidden))
    distiller = keras_unikd.Distiller(
        make_network(8, "t"), student, logits_loss="kd", distribution_loss=None
    )
    assert distiller.loss_term_names[-1] == "regularization_loss"
    _, losses, _ = distiller.compute_distillation_losses(x, y)
    activations = ops.convert_to_numpy(keras.Model(inputs, student.get_layer("act").output)(x))
    expected = 0.01 * np.sum(activations**2) / len(x) + 0.5 * np.mean(activations**2)
    assert value(losses["regularization_loss"]) == pytest.approx(expected, rel=1e-4)
    distiller.compile(optimizer="sgd")
    logs = distiller.train_on_batch(x, y, return_dict=True)
    assert logs["regularization_loss"] == pytest.approx(expected, rel=1e-4)


# --- bad input -----------------------------------------------------------------


def test_features_given_as_one_string_are_one_name(pair):
    distiller = keras_unikd.Distiller(
        *pair, teacher_features="t_stage1", student_features="s_stage1"
    )
    assert distiller.terms[-1].student_features == ("s_stage1",)


@pytest.mark.parametrize(
    "build,match",
    [
        (
            lambda pair: keras_unikd.Distiller(*pair, terms=[terms.KD()], logits_loss="kd"),
            "either terms=.* or the keyword options \\(logits_loss\\)",
        ),
        (
            lambda pair: keras_unikd.Distiller(
                *pair, terms=[terms.KD(), terms.KD(temperature=2.0)]
            ),
            "both report a loss named 'kd_loss'.*name='kd_2'",
        ),
        (lambda pair: keras_unikd.Distiller(*pair, terms=[]), "nothing to train on"),
        (lambda pair: terms.KD(weight=-1.0), "weight must be a finite number >= 0"),
        (lambda pair: terms.KD(temperature=0.0), "temperature must be > 0"),
        (lambda pair: terms.DKD(warmup_epochs=-2), "warmup_epochs must be a number of epochs"),
        (lambda pair: terms.UniKDFeatures([], ["s_stage1"]), "at least one teacher feature"),
        (lambda pair: terms.UniKDFeatures(["t_stage1"], [3]), "must be layer names"),
    ],
)
def test_bad_terms_name_the_fix(pair, build, match):
    with pytest.raises(ValueError, match=match):
        build(pair)


def test_errors_name_the_term(pair):
    with pytest.raises(
        ValueError, match=r"No layer named 's_stage9'.*read by term\(s\) \['hint'\]"
    ):
        keras_unikd.Distiller(
            *pair, terms=[terms.CrossEntropy(), terms.FitNetHint("t_stage2", "s_stage9")]
        )
    with pytest.raises(
        ValueError, match=r"Term 'hint': FitNet hints are feature maps; layer 's_pool'"
    ):
        keras_unikd.Distiller(
            *pair, terms=[terms.CrossEntropy(), terms.FitNetHint("t_stage2", "s_pool")]
        )


def test_a_non_term_is_refused(pair):
    with pytest.raises(TypeError, match="must be a keras_unikd.terms.DistillationTerm"):
        keras_unikd.Distiller(*pair, terms=["s_stage1"])


def test_a_term_that_returns_other_names_is_named():
    class Wrong(terms.DistillationTerm):
        def call(self, record):
            return {"other": ops.ones(())}

    with pytest.raises(
        ValueError, match=r"Wrong.call must return a dict with the keys \['wrong_loss'\]"
    ):
        Wrong(name="wrong")(record())


def test_a_student_of_unknown_input_size_reports_its_losses(batch):
    x, y = batch
    inputs = keras.Input((None, None, 1))
    hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    hidden = PenalisedIdentity()(hidden)
    student = keras.Model(inputs, keras.layers.Dense(5)(hidden))
    t_inputs = keras.Input((None, None, 1))
    t_hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(t_inputs))
    teacher = keras.Model(t_inputs, keras.layers.Dense(5)(t_hidden))
    distiller = keras_unikd.Distiller(teacher, student, logits_loss="kd", distribution_loss=None)
    assert distiller.loss_term_names[-1] == "regularization_loss"
    _, losses, _ = distiller.compute_distillation_losses(x, y)
    assert value(losses["regularization_loss"]) > 0
