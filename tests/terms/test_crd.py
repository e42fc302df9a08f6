"""CRD against a NumPy re-derivation of the reference code (megvii-research/mdistiller,
distillers/CRD.py: Embed, ContrastMemory, ContrastLoss; dataset/cifar100.py's
CIFAR100InstanceSample for the "exact" negatives), on every backend."""

import os

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import weights_of
from keras_unikd import terms
from keras_unikd.data import with_example_index
from keras_unikd.taps import FeatureTap
from keras_unikd.terms.crd import ContrastiveRepresentation

N, K, T = 64, 8, 0.07


def to_numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value), "float64")


# --- the reference, in float64 ---------------------------------------------------


def np_embed(feature, kernel, bias):
    """Embed: nn.Linear, then x / ||x||_2."""
    z = feature @ kernel + bias
    return z / np.sqrt(np.sum(z**2, axis=1, keepdims=True))


def np_nce(x, n):
    """ContrastLoss per example (the reference sums over the batch, then divides by it)."""
    m, noise, eps = x.shape[1] - 1, 1.0 / n, 1e-7
    log_d1 = np.log(x[:, 0] / (x[:, 0] + m * noise + eps))
    log_d0 = np.log((m * noise) / (x[:, 1:] + m * noise + eps))
    return -(log_d1 + log_d0.sum(axis=1))


def np_crd(s, t, memory_v1, memory_v2, contrast, n, z=(None, None), weights=None):
    """ContrastMemory(v1=s, v2=t, idx=contrast) then both ContrastLosses: the loss and Z."""
    out_v2 = np.exp(np.einsum("bkd,bd->bk", memory_v1[contrast], t) / T)
    out_v1 = np.exp(np.einsum("bkd,bd->bk", memory_v2[contrast], s) / T)
    z_v1 = out_v1.mean() * n if z[0] is None else z[0]
    z_v2 = out_v2.mean() * n if z[1] is None else z[1]
    per_example = np_nce(out_v1 / z_v1, n) + np_nce(out_v2 / z_v2, n)
    weights = np.ones(len(s)) if weights is None else weights
    return np.mean(per_example * weights), (z_v1, z_v2)


def np_update(memory, index, v, momentum=0.5):
    """The memory update: momentum, then renormalisation, of the batch's rows."""
    rows = memory[index] * momentum + v * (1 - momentum)
    updated = memory.copy()
    updated[index] = rows / np.sqrt(np.sum(rows**2, axis=1, keepdims=True))
    return updated


# --- helpers -----------------------------------------------------------------------


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.random((N, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 5, size=(N,)).astype("int32")
    rows = rng.permutation(N)[:16].astype("int32")
    return x, y, rows


def crd_term(labels, **kwargs):
    kwargs = {"num_negatives": K, "seed": 1, **kwargs}
    return ContrastiveRepresentation("t_pool", "s_pool", labels=labels, **kwargs)


def pooled(model, path, x, training=False):
    _, (feature,) = FeatureTap(model, [path])(x, training=training)
    return to_numpy(feature)


def state(term):
    names = ("student_memory", "teacher_memory", "student_normalizer", "teacher_normalizer")
    return {name: to_numpy(getattr(term, name)) for name in names}


def reference_inputs(term, teacher, student, x, rows, training=False):
    """The reference's embeddings of the batch and the term's contrast draw, as the
    step that follows will make it (the draw is replayed from the random state)."""
    seed_state = keras.ops.convert_to_numpy(term.seed_generator.state)
    contrast = keras.ops.convert_to_numpy(term.draw_contrast_indices(rows))
    term.seed_generator.state.assign(seed_state)
    s = np_embed(pooled(student, "s_pool", x, training), *weights_of(term.student_embedding))
    t = np_embed(pooled(teacher, "t_pool", x), *weights_of(term.teacher_embedding))
    return s, t, contrast


def loss_of(distiller, x, y, rows, **kwargs):
    batch = {"inputs": x, "example_index": rows}
    losses = distiller.compute_distillation_losses(batch, y, training=False, **kwargs)[1]
    return float(keras.ops.convert_to_numpy(losses["crd_loss"]))


# --- the loss ------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "sample_weight"])
def test_loss_is_the_reference(pair, data, weighted):
    teacher, student = pair
    x, y, rows = data
    term = crd_term(y)
    distiller = keras_unikd.Distiller(teacher, student, terms=[term])
    before = state(term)
    s, t, contrast = reference_inputs(term, teacher, student, x[rows], rows)
    weights = np.random.default_rng(1).random(len(rows)) if weighted else None
    expected, _ = np_crd(
        s, t, before["student_memory"], before["teacher_memory"], contrast, N, weights=weights
    )
    sample_weight = None if weights is None else weights.astype("float32")
    got = loss_of(distiller, x[rows], y[rows], rows, sample_weight=sample_weight)
    np.testing.assert_allclose(got, 0.8 * expected, rtol=1e-5)
    # Inspection changes no state: not the banks, nor Z (still unset).
    after = state(term)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert after["student_normalizer"] == after["teacher_normalizer"] == -1.0


def test_negatives_are_the_exact_modes(data):
    """The positive is the example; K distinct negatives of other classes where a class
    has K of them (np.random.choice(..., replace=False)), else drawn with replacement;
    every example of another class about equally often."""
    _, y, rows = data
    shapes = terms.ForwardShapes({"t_pool": (None, 32)}, {"s_pool": (None, 16)}, 5)
    index = np.concatenate([np.tile(rows, 10), np.full(240, rows[0])])
    others = y != y[rows[0]]
    for many in (K, 60, 100):  # K of 64 examples; more than some classes have; more than N
        term = crd_term(y, num_negatives=many)
        term.build(shapes)
        contrast = keras.ops.convert_to_numpy(term.draw_contrast_indices(index))
        assert contrast.shape == (400, 1 + many)
        np.testing.assert_array_equal(contrast[:, 0], index)
        negatives = contrast[:, 1:]
        assert np.all(y[negatives] != y[index][:, None])
        if many == K:
            assert all(len(set(row)) == K for row in negatives.tolist())
        counts = np.bincount(negatives[160:].ravel(), minlength=N)[others]
        assert counts.mean() / 4 < counts.min() and counts.max() < 2 * counts.mean(), counts
    term = crd_term(None, num_examples=N, negatives="uniform")
    term.build(shapes)
    contrast = keras.ops.convert_to_numpy(term.draw_contrast_indices(rows))
    assert contrast.min() >= 0 and contrast.max() < N and contrast.shape == (16, 1 + K)


# --- training: the banks, Z, the gradients ------------------------------------------


def test_a_train_step_updates_the_banks_as_the_reference(pair, data):
    teacher, student = pair
    x, y, rows = data
    term = crd_term(y)
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), term])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    before = state(term)
    heads = [weights_of(term.student_embedding)[0], weights_of(term.teacher_embedding)[0]]
    conv = weights_of(student.get_layer("s_conv1"))[0]
    s, t, contrast = reference_inputs(term, teacher, student, x[rows], rows, training=True)
    expected, (z_s, z_t) = np_crd(
        s, t, before["student_memory"], before["teacher_memory"], contrast, N
    )
    logs = distiller.train_on_batch(
        {"inputs": x[rows], "example_index": rows}, y[rows], return_dict=True
    )
    np.testing.assert_allclose(logs["crd_loss"], 0.8 * expected, rtol=1e-4)
    after = state(term)
    np.testing.assert_allclose(
        after["student_memory"], np_update(before["student_memory"], rows, s), atol=1e-5
    )
    np.testing.assert_allclose(
        after["teacher_memory"], np_update(before["teacher_memory"], rows, t), atol=1e-5
    )
    np.testing.assert_allclose(
        [after["student_normalizer"], after["teacher_normalizer"]], [z_s, z_t], rtol=1e-4
    )
    # Both heads and the student learn; the teacher's head through its own scores.
    assert not np.allclose(heads[0], weights_of(term.student_embedding)[0])
    assert not np.allclose(heads[1], weights_of(term.teacher_embedding)[0])
    assert not np.allclose(conv, weights_of(student.get_layer("s_conv1"))[0])
    # Evaluation reads the student alone: the banks and Z stay.
    distiller.evaluate({"inputs": x, "example_index": np.arange(N)}, y, verbose=0)
    for name, value in state(term).items():
        np.testing.assert_array_equal(value, after[name], err_msg=name)
    # Later batches use the stored Z.
    s, t, contrast = reference_inputs(term, teacher, student, x[rows], rows)
    expected, _ = np_crd(
        s, t, after["student_memory"], after["teacher_memory"], contrast, N, z=(z_s, z_t)
    )
    np.testing.assert_allclose(
        loss_of(distiller, x[rows], y[rows], rows), 0.8 * expected, rtol=1e-4
    )


def test_fit_with_auto_taps_and_indexed_arrays(pair, data):
    teacher, student = pair
    x, y, _ = data
    term = ContrastiveRepresentation(labels=y, num_negatives=K, seed=0)
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), term])
    assert (term.teacher_features, term.student_features) == (("t_pool",), ("s_pool",))
    assert term.teacher_needs().cacheable
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    before = to_numpy(term.student_memory)
    history = distiller.fit(*with_example_index(x, y), batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["crd_loss"][-1])
    assert not np.allclose(before, to_numpy(term.student_memory))


def test_the_distiller_saves_and_loads_the_banks(pair, data, tmp_path):
    teacher, student = pair
    x, y, rows = data
    term = crd_term(y)
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), term])
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    distiller.train_on_batch({"inputs": x[rows], "example_index": rows}, y[rows])
    path = os.path.join(tmp_path, "crd.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path)
    restored = loaded.terms[-1]
    assert restored.get_config() == term.get_config()
    for name, value in state(term).items():
        np.testing.assert_array_equal(state(restored)[name], value, err_msg=name)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored.labels), y)
    expected = loss_of(distiller, x[rows], y[rows], rows)
    assert loss_of(loaded, x[rows], y[rows], rows) == pytest.approx(expected, rel=1e-6)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(again) is ContrastiveRepresentation and again.get_config() == term.get_config()


# --- errors --------------------------------------------------------------------------


def test_batches_need_indices_inside_the_bank(pair, data):
    teacher, student = pair
    x, y, rows = data
    distiller = keras_unikd.Distiller(teacher, student, terms=[crd_term(y)])
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    missing = "\\['crd'\\] read each example's row in the training set, but the batch carries none"
    with pytest.raises(ValueError, match=missing):
        distiller.compute_distillation_losses(x, y)
    with pytest.raises(ValueError, match=missing):
        distiller.fit(x, y, batch_size=16, verbose=0)
    beyond = "memory bank of num_examples=64 rows, but the data has example index {}: give"
    with pytest.raises(ValueError, match=beyond.format(64)):
        loss_of(distiller, x[rows], y[rows], np.where(rows == rows.max(), 64, rows))
    more_x, more_y = np.concatenate([x, x[:4]]), np.concatenate([y, y[:4]])
    with pytest.raises(ValueError, match=beyond.format(67)):  # at fit's start, all indices
        distiller.fit(*with_example_index(more_x, more_y), batch_size=16, verbose=0)


def test_compiled_steps_mark_an_index_beyond_the_bank(pair, data):
    """Traced steps (TensorFlow, JAX) cannot raise: the loss is NaN and the banks stay;
    eager steps (PyTorch) raise."""
    teacher, student = pair
    x, y, rows = data
    term = crd_term(y)
    distiller = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), term])
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    before = state(term)
    batch = {"inputs": x[rows], "example_index": np.where(rows == rows.max(), 70, rows)}
    if keras.backend.backend() == "torch":
        with pytest.raises(ValueError, match="the data has example index 70"):
            distiller.train_on_batch(batch, y[rows])
        return
    logs = distiller.train_on_batch(batch, y[rows], return_dict=True)
    assert np.isnan(logs["crd_loss"])
    for name, value in state(term).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_labels_and_arguments_are_checked(pair, data):
    teacher, student = pair
    x, y, rows = data
    with pytest.raises(ValueError, match="labels hold 63 entries for num_examples=64"):
        ContrastiveRepresentation(num_examples=N, labels=y[:63])
    term = ContrastiveRepresentation("t_pool", "s_pool", num_examples=N, num_negatives=K)
    with pytest.raises(ValueError, match="labels hold 65 entries for num_examples=64"):
        term.set_labels(np.concatenate([y, y[:1]]))
    distiller = keras_unikd.Distiller(teacher, student, terms=[term])
    with pytest.raises(ValueError, match="has no labels for the examples: give"):
        loss_of(distiller, x[rows], y[rows], rows)
    term.set_labels(y)  # after the build too
    assert np.isfinite(loss_of(distiller, x[rows], y[rows], rows))
    with pytest.raises(ValueError, match="labels hold one class"):
        ContrastiveRepresentation(labels=np.zeros(N, "int32"))
    with pytest.raises(ValueError, match="needs the training set's size"):
        keras_unikd.Distiller(teacher, student, terms=[ContrastiveRepresentation()])
    with pytest.raises(ValueError, match="reads no labels; drop labels"):
        ContrastiveRepresentation(labels=y, negatives="uniform")
    with pytest.raises(ValueError, match="momentum must be a number in \\[0, 1\\)"):
        ContrastiveRepresentation(num_examples=N, momentum=1.0)
    with pytest.raises(ValueError, match="reads one view per example"):
        ContrastiveRepresentation(num_examples=N, views=2)
    with pytest.raises(ValueError, match="ContrastiveRepresentation reads one layer per network"):
        ContrastiveRepresentation(["t_stage2", "t_pool"], "s_pool", num_examples=N)
    volume = terms.ForwardShapes({"t_pool": (None, 32)}, {"s_pool": (None, 2, 2, 2, 8)}, 5)
    with pytest.raises(ValueError, match="embeds each network's pooled vector"):
        ContrastiveRepresentation("t_pool", "s_pool", labels=y).build(volume)
