"""Two-view batches ((weak, strong), labels): fit, evaluate, predict, order, errors."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_unikd
from conftest import make_network
from keras_unikd import terms
from test_losses import np_log_softmax

STUDENT_FEATURES = ["s_stage1", "s_pool"]


class ViewProbe(terms.DistillationTerm):
    """Reports the mean logits of each network on each view, as seen by a term."""

    combines_views = True

    def __init__(self, **kwargs):
        super().__init__(views=2, **kwargs)

    @property
    def loss_names(self):
        return ("teacher_weak", "teacher_strong", "student_weak", "student_strong")

    def call(self, record):
        values = (
            record.teacher_logits,
            record.strong.teacher_logits,
            record.student_logits,
            record.strong.student_logits,
        )
        return {name: ops.mean(v) for name, v in zip(self.loss_names, values)}


@pytest.fixture
def views():
    rng = np.random.default_rng(3)
    weak = rng.random((16, 12, 12, 1), dtype=np.float32)
    strong = rng.random((16, 12, 12, 1), dtype=np.float32)
    labels = rng.integers(0, 5, size=(16,)).astype("int32")
    return weak, strong, labels


def two_view_distiller(pair, features=True):
    teacher, student = pair
    distiller_terms = [terms.CrossEntropy(views=2), terms.MLKD()]
    if features:
        distiller_terms.append(terms.UniKDFeatures(["t_stage1"], STUDENT_FEATURES, views=2))
    return keras_unikd.Distiller(teacher, student, terms=distiller_terms)


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def test_fit_evaluate_predict_save_and_load_on_two_views(pair, views, tmp_path):
    weak, strong, labels = views
    distiller = two_view_distiller(pair)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), metrics=["accuracy"])
    history = distiller.fit((weak, strong), labels, batch_size=8, epochs=1, verbose=0)
    logs = history.history
    for name in ("mlkd_instance_loss", "mlkd_batch_loss", "ce_loss", "feature_loss"):
        assert np.isfinite(logs[name][0]), name
    assert np.isfinite(logs["loss"][0])
    # Evaluation and prediction use the weak view.
    two = distiller.evaluate((weak, strong), labels, batch_size=8, return_dict=True, verbose=0)
    one = distiller.evaluate(weak, labels, batch_size=8, return_dict=True, verbose=0)
    assert two == pytest.approx(one, rel=1e-6)
    predicted = distiller.predict((weak, strong), batch_size=8, verbose=0)
    np.testing.assert_allclose(
        predicted, numpy(distiller.student(weak, training=False)), rtol=1e-5, atol=1e-6
    )
    path = str(tmp_path / "two_views.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert [(type(t).__name__, t.views) for t in loaded.terms] == [
        ("CrossEntropy", 2),
        ("MLKD", 2),
        ("UniKDFeatures", 2),
    ]
    expected = distiller.compute_distillation_losses((weak, strong), labels, training=False)[1]
    got = loaded.compute_distillation_losses((weak, strong), labels, training=False)[1]
    for name, value in expected.items():
        assert float(numpy(got[name])) == pytest.approx(float(numpy(value)), rel=1e-5), name


def test_fit_on_a_two_view_tf_dataset(pair, views):
    import tensorflow as tf

    weak, strong, labels = views
    distiller = two_view_distiller(pair, features=False)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), metrics=["accuracy"])
    dataset = tf.data.Dataset.from_tensor_slices(((weak, strong), labels)).batch(8)
    history = distiller.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert 0.0 <= history.history["accuracy"][0] <= 1.0


def test_the_views_reach_the_terms_in_order(pair, views):
    weak, strong, labels = views
    teacher, student = pair
    distiller = keras_unikd.Distiller(teacher, student, terms=[ViewProbe()])
    _, got, _ = distiller.compute_distillation_losses((weak, strong), labels, training=False)
    expected = {
        "teacher_weak": teacher(weak, training=False),
        "teacher_strong": teacher(strong, training=False),
        "student_weak": student(weak, training=False),
        "student_strong": student(strong, training=False),
    }
    for name, logits in expected.items():
        assert float(numpy(got[name])) == pytest.approx(
            float(np.mean(numpy(logits))), rel=1e-5, abs=1e-6
        ), name
    assert float(numpy(got["teacher_weak"])) != pytest.approx(float(numpy(got["teacher_strong"])))


def test_a_per_view_term_sums_its_views(pair, views):
    weak, strong, labels = views
    teacher, student = pair
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(views=2)])
    _, got, _ = distiller.compute_distillation_losses((weak, strong), labels, training=False)

    def ce(x):
        log_p = np_log_softmax(numpy(student(x, training=False)).astype("float64"))
        return -log_p[np.arange(len(labels)), labels].mean()

    assert float(numpy(got["ce_loss"])) == pytest.approx(ce(weak) + ce(strong), rel=1e-5)


def test_the_student_runs_once_per_view_in_training(pair, views):
    weak, strong, labels = views
    distiller = two_view_distiller(pair)
    outputs = distiller((weak, strong), training=True)
    assert set(outputs) == {"logits", "features", "strong"}
    assert set(outputs["strong"]) == {"logits", "features"}
    assert tuple(outputs["strong"]["logits"].shape) == (16, 5)
    assert set(outputs["strong"]["features"]) == set(STUDENT_FEATURES)


def test_single_view_batches_for_a_two_view_term_are_refused(pair, views):
    weak, _, labels = views
    teacher, student = pair
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), terms.MLKD()])
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"Term 'mlkd' reads two views .* the batch has one"):
        distiller.fit(weak, labels, batch_size=8, epochs=1, verbose=0)


def test_two_view_batches_for_a_one_view_term_are_refused(pair, views):
    weak, strong, labels = views
    teacher, student = pair
    distiller = keras_unikd.Distiller(
        teacher, student, terms=[terms.CrossEntropy(views=2), terms.KD()]
    )
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"Term 'kd' reads one view .*KD\(\.\.\., views=2\)"):
        distiller.fit((weak, strong), labels, batch_size=8, epochs=1, verbose=0)


def test_three_inputs_are_refused(pair, views):
    weak, strong, labels = views
    distiller = two_view_distiller(pair)
    with pytest.raises(ValueError, match="got 3 inputs per batch"):
        distiller.compute_distillation_losses((weak, strong, weak), labels)


def test_keyword_form_mlkd_reads_two_views_and_the_base_temperature():
    keras.utils.set_random_seed(0)
    distiller = keras_unikd.Distiller(
        make_network(8, "t"),
        make_network(4, "s"),
        logits_loss="mlkd",
        distribution_loss=None,
        temperature=2.0,
        logit_standardization=True,
        warmup_epochs=0,
        mlkd_level_weights=(1.0, 0.025, 0.5),
    )
    ce, mlkd = distiller.terms
    assert (ce.views, mlkd.views) == (2, 2)
    assert mlkd.temperatures == (2.0, 3.0, 5.0, 2.0, 6.0)
    assert (mlkd.instance_weight, mlkd.class_weight, mlkd.batch_weight) == (1.0, 0.025, 0.5)
    assert mlkd.logit_standardization
    for option, value in (("mlkd_temperatures", [4.0]), ("mlkd_level_weights", (1, 1, 1))):
        with pytest.raises(ValueError, match=f"{option} is an MLKD option, but logits_loss='kd'"):
            keras_unikd.Distiller(
                make_network(8, "t2"),
                make_network(4, "s2"),
                logits_loss="kd",
                distribution_loss=None,
                **{option: value},
            )
    with pytest.raises(ValueError, match=r"mlkd_level_weights is \(instance, class, batch\)"):
        keras_unikd.Distiller(
            make_network(8, "t3"),
            make_network(4, "s3"),
            logits_loss="mlkd",
            distribution_loss=None,
            mlkd_level_weights=(1.0, 0.5),
        )
