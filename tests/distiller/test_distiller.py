import keras
import numpy as np
import pytest
from keras import ops

import keras_unikd
from conftest import make_network
from conftest import weights_of
from keras_unikd import losses

TF = keras.backend.backend() == "tensorflow"
# Keras's torch backend compiles with torch.compile (dynamo), experimental and
# slow on CPU: the torch pass runs eagerly.
JIT_MODES = {"tensorflow": [True, False], "jax": [True], "torch": [False]}[keras.backend.backend()]


def unikd(teacher, student, **kwargs):
    options = dict(
        teacher_features=["t_stage1_preact"],
        student_features=["s_stage1", "s_stage2", "s_stage3", "s_pool"],
        warmup_epochs=2,
        seed=0,
    )
    options.update(kwargs)
    return keras_unikd.Distiller(teacher, student, **options)


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_fit_trains_student_and_heads_but_not_the_teacher(pair, batch, jit_compile):
    teacher, student = pair
    distiller = unikd(teacher, student)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    before = {
        name: weights_of(layer)
        for name, layer in [
            ("teacher", teacher),
            ("student", student),
            ("student_aggregator", distiller.terms[-1].student_aggregator),
            ("teacher_head", distiller.terms[-1].teacher_head),
            ("student_head", distiller.terms[-1].student_head),
        ]
    }
    traces = []
    train_step = distiller.train_step

    def counted_train_step(*args):  # (data), or (state, data) under JAX
        traces.append(1)
        return train_step(*args)

    distiller.train_step = counted_train_step
    x, y = batch
    history = distiller.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0)
    # TensorFlow and JAX trace the step once: `fit` builds the metrics and the
    # optimizer first (a tf.function that creates variables traces twice);
    # PyTorch runs it eagerly, once a step.
    assert len(traces) == (4 if keras.backend.backend() == "torch" else 1)

    for old, new in zip(before["teacher"], weights_of(teacher)):
        np.testing.assert_array_equal(old, new)  # bit for bit, incl. BN statistics
    for name in ("student", "student_aggregator", "teacher_head", "student_head"):
        layer = getattr(distiller.terms[-1], name) if name != "student" else student
        changed = [not np.array_equal(a, b) for a, b in zip(before[name], weights_of(layer))]
        assert all(changed) if name != "student" else any(changed), name

    terms = ["ce_loss", "dkd_loss", "feature_loss", "consistency_loss"]
    assert distiller.loss_term_names == terms
    for key in terms + ["loss", "accuracy", "val_loss", "val_accuracy"]:
        assert key in history.history, key
        assert all(np.isfinite(history.history[key])), key
    assert "val_dkd_loss" not in history.history
    # The total is the sum of the terms, epoch by epoch.
    sums = np.sum([history.history[key] for key in terms], axis=0)
    np.testing.assert_allclose(history.history["loss"], sums, rtol=1e-4)
    # Two epochs of two steps: the step counter and the learnt epoch length.
    assert float(ops.convert_to_numpy(distiller.training_step)) == 4.0
    assert float(ops.convert_to_numpy(distiller.steps_per_epoch)) == 2.0


def test_auxiliary_layers_are_built_in_the_constructor(pair):
    distiller = unikd(*pair)
    features = distiller.terms[-1]
    for layer in (features.student_aggregator, features.student_head, features.teacher_head):
        assert layer.built and layer.weights
    assert features.teacher_aggregator is None  # one teacher feature feeds its head
    ids = {id(v) for v in distiller.trainable_variables}
    for layer in (distiller.student, features.student_aggregator, features.teacher_head):
        assert {id(v) for v in layer.trainable_variables} <= ids
    assert not {id(v) for v in distiller.teacher.weights} & ids
    # The student's fused map has the shape of the teacher's first tapped stage.
    shapes = [(None, 12, 12, 4), (None, 6, 6, 8), (None, 3, 3, 16), (None, 16)]
    assert features.student_aggregator.compute_output_shape(shapes) == (None, 12, 12, 8)


def test_terms_match_the_losses_module(pair, batch):
    teacher, student = pair
    x, y = batch
    distiller = unikd(
        teacher,
        student,
        distribution_loss="gaussian",
        teacher_features=["t_stage1", "t_stage2"],
        ce_weight=0.5,
        logits_weight=2.0,
        feature_weight=3.0,
        consistency_weight=0.25,
        temperature=3.0,
        dkd_beta=6.0,
        warmup_epochs=4,
    )
    distiller.steps_per_epoch.assign(10.0)
    distiller.training_step.assign(15.0)  # epoch 2: warm-up factor 2/4
    total, terms, student_logits = distiller.compute_distillation_losses(x, y, training=False)

    t_logits = teacher(x, training=False)
    t_feats = keras.Model(
        teacher.input, [teacher.get_layer(n).output for n in ("t_stage1", "t_stage2")]
    )(x)
    s_feats = keras.Model(
        student.input,
        [student.get_layer(f"s_{n}").output for n in ("stage1", "stage2", "stage3", "pool")],
    )(x)
    features = distiller.terms[-1]
    s_dist = features.student_head(features.student_aggregator(s_feats))
    t_dist = features.teacher_head(features.teacher_aggregator(t_feats))
    expected = {
        "ce_loss": 0.5 * losses.cross_entropy(student_logits, y),
        "dkd_loss": 2.0 * 0.5 * losses.dkd_loss(student_logits, t_logits, y, 1.0, 6.0, 3.0),
        "feature_loss": 3.0
        * losses.gaussian_kl(s_dist["mu"], s_dist["log_var"], t_dist["mu"], t_dist["log_var"]),
        "consistency_loss": 0.25
        * (
            losses.kd_loss(s_dist["mu"], student_logits, 1.0)
            + losses.kd_loss(t_dist["mu"], t_logits, 1.0)
        ),
    }
    for key, value in expected.items():
        np.testing.assert_allclose(
            ops.convert_to_numpy(terms[key]), ops.convert_to_numpy(value), rtol=1e-5, err_msg=key
        )
    np.testing.assert_allclose(
        ops.convert_to_numpy(total),
        sum(float(ops.convert_to_numpy(v)) for v in expected.values()),
        rtol=1e-5,
    )


def test_warmup_scales_the_logits_loss_by_epoch(pair, batch):
    x, y = batch
    distiller = unikd(*pair, distribution_loss="gaussian", warmup_epochs=4)
    values = {}
    distiller.steps_per_epoch.assign(3.0)
    for epoch in (1.0, 2.0, 4.0, 9.0):
        distiller.training_step.assign(3.0 * (epoch - 1) + 2.0)  # the epoch's last step
        values[epoch] = float(
            distiller.compute_distillation_losses(x, y, training=False)[1]["dkd_loss"]
        )
    assert values[2.0] == pytest.approx(2 * values[1.0], rel=1e-5)
    assert values[4.0] == pytest.approx(4 * values[1.0], rel=1e-5)
    assert values[9.0] == pytest.approx(values[4.0], rel=1e-5)


def test_sampled_form_draws_fresh_noise_and_gaussian_form_is_deterministic(pair, batch):
    x, y = batch
    sampled = unikd(*pair)
    first = sampled.compute_distillation_losses(x, y)[1]["feature_loss"]
    second = sampled.compute_distillation_losses(x, y)[1]["feature_loss"]
    assert float(first) != float(second)
    closed = unikd(*pair, distribution_loss="gaussian")
    first = closed.compute_distillation_losses(x, y)[1]["feature_loss"]
    second = closed.compute_distillation_losses(x, y)[1]["feature_loss"]
    assert float(first) == float(second)


def test_plain_kd_configuration_and_sample_weights(pair, batch):
    teacher, student = pair
    x, y = batch
    distiller = keras_unikd.Distiller(
        teacher, student, logits_loss="kd", distribution_loss=None, warmup_epochs=0
    )
    assert distiller.loss_term_names == ["ce_loss", "kd_loss"]
    assert [type(term).__name__ for term in distiller.terms] == ["CrossEntropy", "KD"]
    total, terms, _ = distiller.compute_distillation_losses(
        x, y, sample_weight=np.zeros(16, "float32")
    )
    assert float(total) == 0.0
    _, terms, logits = distiller.compute_distillation_losses(x, y)
    np.testing.assert_allclose(
        ops.convert_to_numpy(terms["kd_loss"]),
        ops.convert_to_numpy(losses.kd_loss(logits, teacher(x), 4.0)),
        rtol=1e-5,
    )


def test_regularization_losses_of_the_student_are_reported(batch):
    x, y = batch
    teacher = make_network(8, "t")
    inputs = keras.Input((12, 12, 1))
    hidden = keras.layers.Flatten()(inputs)
    logits = keras.layers.Dense(5, kernel_regularizer=keras.regularizers.L2(0.1))(hidden)
    student = keras.Model(inputs, logits)
    distiller = keras_unikd.Distiller(teacher, student, logits_loss="kd", distribution_loss=None)
    assert distiller.loss_term_names[-1] == "regularization_loss"
    _, terms, _ = distiller.compute_distillation_losses(x, y)
    kernel = ops.convert_to_numpy(student.layers[-1].kernel)
    np.testing.assert_allclose(
        float(terms["regularization_loss"]), 0.1 * np.sum(kernel**2), rtol=1e-5
    )


def test_evaluate_and_predict_use_the_student(pair, batch):
    teacher, student = pair
    x, y = batch
    distiller = unikd(teacher, student)
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    result = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert set(result) == {"loss", "accuracy"}
    expected_loss = float(losses.cross_entropy(student(x), y))
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), ops.convert_to_numpy(student(x)), rtol=1e-5, atol=1e-6
    )


# --- bad input -------------------------------------------------------------


def test_unknown_layer_name_lists_layers(pair):
    with pytest.raises(
        ValueError, match=r"No layer named 's_stage7'.*Available layers:.*'s_stage1'"
    ):
        unikd(*pair, student_features=["s_stage1", "s_stage7"])


def test_class_count_mismatch(pair):
    teacher, _ = pair
    student = make_network(4, "s", num_classes=7)
    with pytest.raises(ValueError, match="Teacher has 5 classes but student has 7"):
        unikd(teacher, student)


def test_input_shape_mismatch(pair):
    teacher, _ = pair
    student = make_network(4, "s", input_shape=(16, 16, 1))
    with pytest.raises(ValueError, match=r"Teacher input shape\(s\) \[\(12, 12, 1\)\] differ"):
        unikd(teacher, student)


def test_rank_5_feature_is_rejected():
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Reshape((12, 12, 1, 1), name="s_volume")(inputs)
    x = keras.layers.Flatten()(x)
    student = keras.Model(inputs, keras.layers.Dense(5)(x))
    with pytest.raises(ValueError, match=r"'s_volume'.*rank 5.*Tap another layer"):
        unikd(make_network(8, "t"), student, student_features=["s_volume"])


@pytest.mark.parametrize(
    "labels,match",
    [
        (np.eye(5, dtype="float32")[np.arange(16) % 5], "looks one-hot"),
        (np.zeros((16, 2, 1), "int32"), r"expected sparse integer class ids"),
    ],
)
def test_labels_of_the_wrong_shape(pair, batch, labels, match):
    distiller = unikd(*pair)
    with pytest.raises(ValueError, match=match):
        distiller.compute_distillation_losses(batch[0], labels)


def test_column_labels_are_accepted(pair, batch):
    x, y = batch
    distiller = unikd(*pair, distribution_loss="gaussian")
    flat = distiller.compute_distillation_losses(x, y)[0]
    column = distiller.compute_distillation_losses(x, y[:, None])[0]
    assert float(flat) == float(column)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            dict(logits_loss="mse"),
            r"Unknown logits_loss='mse'; expected one of 'dkd', 'kd', 'mlkd', None",
        ),
        (dict(distribution_loss="exact"), "Unknown distribution_loss='exact'"),
        (dict(distribution_loss=None), "would be ignored"),
        (dict(student_features=[]), "needs at least one teacher feature and one student feature"),
        (dict(fuse_student_features=False), "fusion is off"),
    ],
)
def test_inconsistent_options(pair, kwargs, match):
    with pytest.raises(ValueError, match=match):
        unikd(*pair, **kwargs)


def test_compile_rejects_a_loss(pair):
    with pytest.raises(ValueError, match="does not take a `loss`"):
        unikd(*pair).compile(optimizer="sgd", loss="mse")
