"""KD-SVD against a NumPy re-derivation of the reference code
(megvii-research/mdistiller, distillers/KDSVD.py), on every backend."""

import os

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import make_network
from conftest import weights_of
from keras_unikd import terms
from keras_unikd.taps import FeatureTap
from keras_unikd.terms.kdsvd import KDSVD
from keras_unikd.terms.kdsvd import singular_vectors


def nchw(model, paths, x):
    """The tapped maps as PyTorch lays them out, `(batch, C, H, W)`, in float64."""
    _, features = FeatureTap(model, paths)(x)
    return [
        np.asarray(keras.ops.convert_to_numpy(f), "float64").transpose(0, 3, 1, 2)
        for f in features
    ]


def normalize(x, axis):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def removenan(x):
    return np.where(np.isfinite(x), x, 0.0)


def svd(feat, n):
    """The reference's `svd`: `feat.view(B, C * H, W)`, `torch.svd`, truncated, normalised."""
    b, c, h, w = feat.shape
    u, s, vh = np.linalg.svd(feat.reshape(b, c * h, w), full_matrices=False)
    v = vh.transpose(0, 2, 1)  # torch.svd returns V, not V^T
    u, s, v = removenan(u), removenan(s), removenan(v)
    return normalize(u[:, :, :n], 1), normalize(s[:, :n], 1), normalize(v[:, :, :n], 1)


def fix_signs(v):
    """The term's sign convention for the teacher's vectors (columns of `(B, W, n)`):
    the entry of largest magnitude positive (the reference leaves it to the SVD routine)."""
    index = np.abs(v).argmax(axis=1)[:, None, :]
    return v * np.where(np.take_along_axis(v, index, axis=1) < 0, -1.0, 1.0)


def align_rsv(a, b):
    cosine = a.transpose(0, 2, 1) @ b
    largest = np.abs(cosine).max(axis=1, keepdims=True)
    mask = np.where(largest == np.abs(cosine), np.sign(cosine), 0.0)
    return a @ mask, b


def reference_per_example(g_s, g_t, k):
    """`kdsvd_loss` before its sum over the batch and division by the batch size."""
    total, previous = 0.0, None
    for i, (f_s, f_t) in enumerate(zip(g_s, g_t)):
        _, s_t, v_t = svd(f_t, k)
        v_t = fix_signs(v_t)
        _, _, v_s = svd(f_s, k + 3)
        v_s, v_t = align_rsv(v_s, v_t)
        s_t = s_t[:, None, :]
        v_t, v_s = v_t * s_t, v_s * s_t
        if i > 0:
            v_sb, v_tb = previous
            s_rbf = np.exp(-((v_s[:, :, None] - v_sb[:, None]) ** 2) / 8)
            t_rbf = np.exp(-((v_t[:, :, None] - v_tb[:, None]) ** 2) / 8)
            total = total + removenan((s_rbf - t_rbf) ** 2).sum(axis=(1, 2, 3))
        previous = v_s, v_t
    return total


def kdsvd_loss(distiller, x, y, sample_weight=None):
    def loss(x, y, sample_weight):
        losses = distiller.compute_distillation_losses(
            x, y, sample_weight=sample_weight, training=False
        )[1]
        return losses["kdsvd_loss"]

    if keras.backend.backend() == "jax":
        # Eager JAX compiles each of the term's ~250 small ops per shape: one
        # compiled program is several times faster.
        import jax

        loss = jax.jit(loss)
    return float(keras.ops.convert_to_numpy(loss(x, y, sample_weight)))


STAGES = ["stage1", "stage2", "stage3"]


def test_singular_vectors_read_the_reference_matrix():
    """The `(C * H) x W` matrix of the PyTorch layout: vectors along the width."""
    rng = np.random.default_rng(1)
    feature = rng.normal(size=(3, 5, 4, 6))  # (B, H, W, C)
    vectors, values = singular_vectors(feature.astype("float32"), 2)
    _, s, v = svd(feature.transpose(0, 3, 1, 2), 2)
    vectors = keras.ops.convert_to_numpy(vectors).transpose(0, 2, 1)
    np.testing.assert_allclose(np.abs(vectors), np.abs(v), atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(values), s, atol=1e-6)


# Three stage pairs with k = 1 (the reference's); two with k = 2 (singular
# values that are not all 1, two vectors to align).
@pytest.mark.parametrize("k, stages", [(1, STAGES), (2, STAGES[1:])])
def test_kdsvd_loss_is_the_reference(pair, batch, k, stages):
    teacher, student = pair
    x, y = batch
    t_paths, s_paths = [f"t_{s}" for s in stages], [f"s_{s}" for s in stages]
    kdsvd = KDSVD(t_paths, s_paths, k=k, weight=3.0)
    distiller = keras_unikd.Distiller(teacher, student, terms=[kdsvd])
    per_example = reference_per_example(nchw(student, s_paths, x), nchw(teacher, t_paths, x), k)
    assert per_example.min() > 0
    # Sample weights weight the per-example sums, over the batch size (ones: the
    # unweighted loss; weights of one shape share one compiled program).
    for weights in (np.ones(len(x)), np.linspace(0.0, 2.0, len(x))):
        expected = 3.0 * (per_example * weights).mean()
        got = kdsvd_loss(distiller, x, y, weights.astype("float32"))
        np.testing.assert_allclose(got, expected, rtol=2e-5)


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # the unused logits layer
def test_the_term_trains_the_student_saves_and_loads(pair, batch, tmp_path):
    teacher, student = pair
    x, y = batch
    kdsvd = KDSVD(["t_stage2", "t_stage3"], ["s_stage2", "s_stage3"])
    assert (kdsvd.k, kdsvd.weight, kdsvd.loss_names) == (1, 1.0, ("kdsvd_loss",))
    # Only this term, scaled up: its gradient (through the student's SVD) moves the
    # student's first convolution.
    kdsvd_only = KDSVD(["t_stage2", "t_stage3"], ["s_stage2", "s_stage3"], weight=1e4)
    distiller = keras_unikd.Distiller(teacher, student, terms=[kdsvd_only])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    before = weights_of(student.get_layer("s_conv1"))[0]
    logs = distiller.train_on_batch(x, y, return_dict=True)
    after = weights_of(student.get_layer("s_conv1"))[0]
    assert np.isfinite(logs["kdsvd_loss"]) and logs["kdsvd_loss"] > 0
    assert np.isfinite(after).all() and not np.allclose(before, after)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(kdsvd))
    assert isinstance(restored, KDSVD) and restored.get_config() == kdsvd.get_config()
    path = os.path.join(tmp_path, "kdsvd.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.terms[0].get_config() == kdsvd_only.get_config()
    np.testing.assert_allclose(kdsvd_loss(loaded, x, y), kdsvd_loss(distiller, x, y), rtol=1e-5)


def test_auto_pairs_the_deepest_stages_and_trains(batch):
    keras.utils.set_random_seed(0)
    teacher, student = make_network(8, "t"), make_network(4, "s")
    x, y = batch
    kdsvd = KDSVD("auto", "auto")
    assert not kdsvd.teacher_needs().cacheable
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), kdsvd])
    assert kdsvd.teacher_features == tuple(f"t_{s}" for s in STAGES)
    assert kdsvd.student_features == tuple(f"s_{s}" for s in STAGES)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    for _ in range(3):
        logs = distiller.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["kdsvd_loss"]) and np.isfinite(logs["loss"])
    needs = KDSVD(["t_stage1", "t_stage2"], ["s_stage1", "s_stage2"]).teacher_needs()
    assert needs.feature_maps == ("t_stage1", "t_stage2") and not needs.cacheable
    assert "'kdsvd' (KDSVD)" in needs.reason


def test_bad_inputs_are_named(pair):
    with pytest.raises(ValueError, match="as many teacher_features as student_features"):
        KDSVD(["t_stage1", "t_stage2"], ["s_stage1"])
    with pytest.raises(ValueError, match="compares consecutive stages, so it needs two or more"):
        KDSVD("t_stage1", "s_stage1")
    with pytest.raises(ValueError, match="KDSVD k must be"):
        KDSVD(["t_stage1", "t_stage2"], ["s_stage1", "s_stage2"], k=0)
    cases = [
        (["t_stage2", "t_pool"], ["s_stage2", "s_pool"], 1, "reads feature maps .* 't_pool'"),
        # 6 columns against 3: the singular vectors have other lengths.
        (["t_stage1", "t_stage2"], ["s_stage1", "s_stage3"], 1, r"width, which must be known"),
        # stage3 is 3x3: min(H * C, W) = 3 singular vectors.
        (["t_stage2", "t_stage3"], ["s_stage2", "s_stage3"], 4, "k=4 is more than the 3"),
    ]
    for t_paths, s_paths, k, message in cases:
        with pytest.raises(ValueError, match=message):
            keras_unikd.Distiller(*pair, terms=[KDSVD(t_paths, s_paths, k=k)])
