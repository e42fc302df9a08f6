"""SP, PKT and RKD against NumPy re-derivations of the reference code
(megvii-research/mdistiller, distillers/{SP,PKT,RKD}.py), on every backend."""

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import weights_of
from keras_unikd import terms
from keras_unikd.taps import FeatureTap

# --- the reference, in float64 ---------------------------------------------------


def normalize(x, axis=-1):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def np_sp(s, t):
    s, t = s.reshape(len(s), -1), t.reshape(len(t), -1)
    g_s, g_t = normalize(s @ s.T), normalize(t @ t.T)
    return np.sum((g_t - g_s) ** 2) / len(s) ** 2


def np_pkt(s, t, eps=1e-7):
    def probabilities(f):
        f = f / (np.sqrt(np.sum(f**2, axis=1, keepdims=True)) + eps)
        similarity = (f @ f.T + 1.0) / 2.0
        return similarity / similarity.sum(axis=1, keepdims=True)

    p_s, p_t = probabilities(s), probabilities(t)
    return np.mean(p_t * np.log((p_t + eps) / (p_s + eps)))


def huber(x):
    return np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)


def np_rkd(s, t, squared=False, eps=1e-12):
    def distances(e):
        square = (e**2).sum(axis=1)
        d = np.clip(square[:, None] + square[None, :] - 2 * e @ e.T, eps, None)
        d = d if squared else np.sqrt(d)
        np.fill_diagonal(d, 0.0)
        return d / d[d > 0].mean()

    def angles(e):
        edges = normalize(e[None, :, :] - e[:, None, :], axis=2)  # [i, j] = e_j - e_i
        return np.einsum("ijd,ikd->ijk", edges, edges)

    distance = huber(distances(s) - distances(t)).mean()
    angle = huber(angles(s) - angles(t)).mean()
    return distance, angle


def features(model, path, x):
    _, (feature,) = FeatureTap(model, [path])(x)
    return np.asarray(keras.ops.convert_to_numpy(feature), "float64")


def losses_of(teacher, student, term, x, y, sample_weight=None):
    distiller = keras_unikd.Distiller(teacher, student, terms=[term])
    losses = distiller.compute_distillation_losses(
        x, y, sample_weight=sample_weight, training=False
    )[1]
    return {name: float(keras.ops.convert_to_numpy(value)) for name, value in losses.items()}


# --- the losses ------------------------------------------------------------------


def test_sp_is_the_reference_on_whole_maps_of_other_widths(pair, batch):
    teacher, student = pair
    x, y = batch
    # The teacher's 32 channels at 3x3 against the student's 8 at 6x6.
    sp = terms.SimilarityPreserving("t_stage3", "s_stage2")
    expected = 3000.0 * np_sp(features(student, "s_stage2", x), features(teacher, "t_stage3", x))
    got = losses_of(teacher, student, sp, x, y)["sp_loss"]
    np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_pkt_is_the_reference_on_pooled_features(pair, batch):
    teacher, student = pair
    x, y = batch
    pkt = terms.ProbabilisticTransfer("t_stage3", "s_pool")  # a map, pooled by the term
    teacher_pooled = features(teacher, "t_stage3", x).mean(axis=(1, 2))
    expected = 30000.0 * np_pkt(features(student, "s_pool", x), teacher_pooled)
    got = losses_of(teacher, student, pkt, x, y)["pkt_loss"]
    # Two random networks' similarities are close, so the mean of p log(p / q)
    # nearly cancels and float32 keeps 2 to 3 digits of it: this checks the
    # wiring (taps, pooling); the test below checks the loss to 1e-5.
    np.testing.assert_allclose(got, expected, rtol=1e-2)


def test_pkt_loss_is_the_reference_on_distinct_features():
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(12, 6)), rng.normal(size=(12, 9)) + 0.5
    pkt = terms.ProbabilisticTransfer("t", "s")
    (got,) = pkt.relation(student.astype("float32"), teacher.astype("float32"))
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(got)), np_pkt(student, teacher), rtol=1e-5
    )


@pytest.mark.parametrize("squared", [False, True])
def test_rkd_is_the_reference(pair, batch, squared):
    teacher, student = pair
    x, y = batch
    rkd = terms.RelationalKD("t_pool", "s_pool", squared=squared, weight=2.0)
    s, t = features(student, "s_pool", x), features(teacher, "t_pool", x)
    distance, angle = np_rkd(s, t, squared)
    got = losses_of(teacher, student, rkd, x, y)
    np.testing.assert_allclose(got["rkd_distance_loss"], 2.0 * 25.0 * distance, rtol=5e-5)
    np.testing.assert_allclose(got["rkd_angle_loss"], 2.0 * 50.0 * angle, rtol=5e-5, atol=1e-7)


def test_sample_weights_weight_the_pairs(pair, batch):
    """Weights w_i w_j per pair, divided by the number of pairs: ones change nothing,
    and zero weights keep only the pairs of the weighted examples."""
    teacher, student = pair
    x, y = batch
    s, t = features(student, "s_stage3", x), features(teacher, "t_stage3", x)
    weights = np.zeros(len(x), "float32")
    weights[:5] = 1.0
    sp = terms.SimilarityPreserving("t_stage3", "s_stage3", weight=1.0)
    ones = losses_of(teacher, student, sp, x, y, np.ones(len(x), "float32"))["sp_loss"]
    np.testing.assert_allclose(ones, np_sp(s, t), rtol=2e-5)
    g = lambda f: normalize(f.reshape(len(f), -1) @ f.reshape(len(f), -1).T)  # noqa: E731
    kept = ((g(t) - g(s)) ** 2)[:5, :5].sum() / len(x) ** 2
    got = losses_of(teacher, student, sp, x, y, weights)["sp_loss"]
    np.testing.assert_allclose(got, kept, rtol=2e-5)


# --- training, saving, the teacher's side ------------------------------------------


@pytest.mark.parametrize(
    "term",
    [
        lambda: terms.SimilarityPreserving("t_stage3", "s_stage3"),
        lambda: terms.ProbabilisticTransfer("t_pool", "s_pool"),
        lambda: terms.RelationalKD("t_pool", "s_pool"),
    ],
    ids=["sp", "pkt", "rkd"],
)
def test_each_term_trains_the_student_and_round_trips(pair, batch, term):
    teacher, student = pair
    x, y = batch
    term = term()
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), term])
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    before = weights_of(student.get_layer("s_conv1"))[0]
    logs = distiller.train_on_batch(x, y, return_dict=True)
    for name in term.loss_names:
        assert np.isfinite(logs[name]) and logs[name] > 0, (name, logs)
    assert not np.allclose(before, weights_of(student.get_layer("s_conv1"))[0])
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(restored) is type(term) and restored.get_config() == term.get_config()


def test_pooled_terms_can_be_cached_and_sp_cannot():
    assert terms.ProbabilisticTransfer("t_stage3", "s_pool").teacher_needs().pooled_features == (
        "t_stage3",
    )
    assert terms.RelationalKD("t_pool", "s_pool").teacher_needs().cacheable
    needs = terms.SimilarityPreserving("t_stage3", "s_stage3").teacher_needs()
    assert not needs.cacheable and "'t_stage3' between examples" in needs.reason


def test_bad_input_is_named(pair, batch):
    teacher, student = pair
    x, y = batch
    with pytest.raises(ValueError, match="undefined on a batch of 1; use batches of 2"):
        losses_of(teacher, student, terms.RelationalKD("t_pool", "s_pool"), x[:1], y[:1])
    with pytest.raises(ValueError, match="SimilarityPreserving reads one layer per network"):
        terms.SimilarityPreserving(["t_stage2", "t_stage3"], "s_stage3")
    with pytest.raises(ValueError, match="RelationalKD angle_weight"):
        terms.RelationalKD("t_pool", "s_pool", angle_weight=-1.0)
