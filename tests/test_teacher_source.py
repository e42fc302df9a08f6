"""Teacher sources: the online teacher's outputs as the terms declare them, and
a Distiller built on a cached teacher without the teacher model."""

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import make_network
from keras_unikd import terms
from keras_unikd.teacher_source import CachedTeacher
from keras_unikd.teacher_source import OnlineTeacher
from keras_unikd.teacher_source import TeacherOutputs
from keras_unikd.terms import TeacherNeeds


def cached_source(num_classes=5, shape=(None, 12, 12, 8)):
    return CachedTeacher(num_classes, {"t_stage1": shape}, input_shapes=[(12, 12, 1)])


def test_outputs_are_reduced_as_the_terms_declare(pair, batch):
    teacher, _ = pair
    x, _ = batch
    needs = TeacherNeeds(logits=True, pooled_features=("t_stage1", "t_pool"))
    out = TeacherOutputs(teacher, needs)(x)
    tap = keras_unikd.FeatureTap(teacher, ["t_stage1", "t_pool"])
    logits, (stage1, pool) = tap(x)
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-6)
    np.testing.assert_allclose(
        out["features"]["t_stage1"], np.mean(keras.ops.convert_to_numpy(stage1), axis=(1, 2)),
        rtol=1e-5, atol=1e-6,
    )
    np.testing.assert_allclose(out["features"]["t_pool"], pool, rtol=1e-6)  # a vector as is
    # A map that one term reads whole and another pooled is given whole.
    both = TeacherNeeds.combine([needs, TeacherNeeds(feature_maps=("t_stage1",))])
    assert both.feature_maps == ("t_stage1",) and both.pooled_features == ("t_pool",)
    out = TeacherOutputs(teacher, both)(x)
    assert tuple(out["features"]["t_stage1"].shape) == (16, 12, 12, 8)


def test_online_source_runs_both_views_in_one_pass(pair, batch):
    teacher, _ = pair
    x, _ = batch
    source = OnlineTeacher(teacher)
    source.prepare(TeacherNeeds(logits=True, pooled_features=("t_stage1",), views=2))
    weak, strong = source.outputs(x, x[::-1], None)
    np.testing.assert_allclose(weak["logits"], source.outputs(x, None, None)[0]["logits"],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(strong["logits"], weak["logits"][::-1], rtol=1e-5, atol=1e-6)


def test_a_cached_teacher_builds_the_terms_from_the_recorded_shapes():
    student = make_network(4, "s")
    distiller = keras_unikd.Distiller(
        cached_source(), student,
        terms=[terms.KD(), terms.UniKDFeatures("t_stage1", ["s_stage1", "s_pool"])],
    )
    unikd = distiller.terms[1]
    # The student's aggregator outputs the teacher's stage-1 map shape.
    assert unikd.student_aggregator.compute_output_shape(
        [(None, 12, 12, 4), (None, 16)]
    ) == (None, 12, 12, 8)
    assert distiller.teacher is None and distiller.get_config()["teacher"]["class_name"] == (
        "CachedTeacher"
    )


@pytest.mark.parametrize(
    "make_terms, match",
    [
        (lambda: [terms.FitNetHint("t_stage1", "s_stage2")], "cannot: term 'hint'"),
        (lambda: [terms.UniKDFeatures("t_stage2", ["s_pool"])], r"\['t_stage2'\].*did not tap"),
        (lambda: [terms.UniKDFeatures("auto", ["s_pool"])], "needs the teacher model"),
    ],
    ids=["full_map", "untapped_layer", "auto"],
)
def test_a_cached_teacher_refuses_terms_it_cannot_serve(make_terms, match):
    with pytest.raises(ValueError, match=match):
        keras_unikd.Distiller(cached_source(), make_network(4, "s"), terms=make_terms())


def test_a_cached_teacher_checks_classes_and_inputs():
    with pytest.raises(ValueError, match="Teacher has 7 classes but student has 5"):
        keras_unikd.Distiller(cached_source(num_classes=7), make_network(4, "s"),
                              terms=[terms.KD()])
    with pytest.raises(ValueError, match="differ from student input shape"):
        keras_unikd.Distiller(
            cached_source(), make_network(4, "s", input_shape=(16, 16, 1)), terms=[terms.KD()]
        )


def test_a_teacher_of_another_type_is_named():
    with pytest.raises(TypeError, match="teacher must be a keras.Model"):
        keras_unikd.Distiller(object(), make_network(4, "s"), terms=[terms.KD()])
