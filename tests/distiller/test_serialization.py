import os
import zipfile

import keras
import numpy as np
import pytest
from keras import ops

import keras_unikd


def make_distiller(pair, **kwargs):
    teacher, student = pair
    return keras_unikd.Distiller(
        teacher,
        student,
        teacher_features=["t_stage1", "t_stage2"],
        student_features=["s_stage1", "s_stage3", "s_pool"],
        seed=5,
        **kwargs,
    )


def stored_array_sizes(path):
    """Sizes of every array in the weights file of a `.keras` archive."""
    import h5py

    sizes = []
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as handle:
        with h5py.File(handle, "r") as weights:
            weights.visititems(
                lambda _, item: sizes.append(item.size) if isinstance(item, h5py.Dataset) else None
            )
    return sorted(sizes)


@pytest.mark.parametrize("form", ["sampled", "gaussian"])
def test_distiller_save_load_round_trip(pair, batch, tmp_path, form):
    x, y = batch
    distiller = make_distiller(pair, distribution_loss=form, dkd_beta=6.0, warmup_epochs=3)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), metrics=["accuracy"])
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)  # moves every trainable weight
    path = os.path.join(tmp_path, "distiller.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path)

    assert isinstance(loaded, keras_unikd.Distiller)
    term_names = [type(term).__name__ for term in loaded.terms]
    assert term_names == ["CrossEntropy", "DKD", "UniKDFeatures"]
    assert loaded.terms[1].beta == 6.0 and loaded.terms[2].distribution_loss == form
    assert not loaded.teacher.trainable
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded.predict(x, verbose=0)),
        ops.convert_to_numpy(distiller.predict(x, verbose=0)),
    )
    for training in (False, True):  # True draws noise: the seed state is saved too
        expected = distiller.compute_distillation_losses(x, y, training=training)[1]
        actual = loaded.compute_distillation_losses(x, y, training=training)[1]
        for key in expected:
            assert float(actual[key]) == pytest.approx(float(expected[key]), rel=1e-6), key
    # The optimizer state came back and training goes on.
    assert int(ops.convert_to_numpy(loaded.optimizer.iterations)) == 2
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_student_alone_holds_no_teacher_or_head_weights(pair, batch, tmp_path):
    x, _ = batch
    distiller = make_distiller(pair)
    path = os.path.join(tmp_path, "student.keras")
    distiller.student.save(path)
    student_sizes = sorted(int(np.prod(w.shape)) for w in distiller.student.weights)
    assert stored_array_sizes(path) == student_sizes
    student = keras.models.load_model(path)
    assert student.count_params() == distiller.student.count_params()
    np.testing.assert_allclose(
        ops.convert_to_numpy(student(x)), ops.convert_to_numpy(distiller.student(x)), rtol=1e-6
    )


def test_public_classes_are_registered_and_configs_round_trip(pair):
    from keras_unikd import terms

    public = (keras_unikd.Distiller, keras_unikd.FitNetDistiller, keras_unikd.MultiStageAggregator,
              keras_unikd.DistributionHead, terms.CrossEntropy, terms.KD, terms.DKD,
              terms.UniKDFeatures, terms.FitNetHint)
    for cls in public:
        name = f"keras_unikd>{cls.__name__}"
        assert keras.saving.get_registered_object(name) is cls
    distiller = make_distiller(pair, distribution_loss="gaussian")
    clone = keras_unikd.Distiller.from_config(distiller.get_config())
    assert clone.get_config()["terms"][-1]["config"]["teacher_features"] == ["t_stage1", "t_stage2"]
    assert clone.count_params() == distiller.count_params()
