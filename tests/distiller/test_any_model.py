"""`Distiller(teacher, student)` alone on CNNs, ViTs and text classifiers."""

import keras
import numpy as np
import pytest
from token_models import tiny_text_classifier
from token_models import tiny_vit

from conftest import make_network
from keras_unikd import Distiller
from keras_unikd import terms

PAIRS = {
    "cnn->vit": lambda: (make_network(8, "t"), tiny_vit("s")),
    "vit->cnn": lambda: (tiny_vit("t", width=16), make_network(4, "s")),
    "vit->vit": lambda: (tiny_vit("t", width=16), tiny_vit("s", prefix_tokens=0)),
    "text->text": lambda: (tiny_text_classifier("t", width=16), tiny_text_classifier("s")),
}


def inputs_for(model, examples=8):
    rng = np.random.default_rng(0)
    if model.inputs[0].dtype == "int32":
        return rng.integers(0, 50, (examples, *model.inputs[0].shape[1:])).astype("int32")
    return rng.random((examples, *model.inputs[0].shape[1:]), dtype=np.float32)


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_unikd_with_automatic_taps_trains(pair):
    keras.utils.set_random_seed(0)
    teacher, student = PAIRS[pair]()
    distiller = Distiller(teacher, student, warmup_epochs=1)
    distiller.compile(optimizer="sgd")
    x = inputs_for(teacher)
    y = np.arange(8) % 5
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert all(np.isfinite(values[-1]) for values in history.values())
    assert history["feature_loss"][-1] > 0
    unikd = distiller.terms[-1]
    assert isinstance(unikd, terms.UniKDFeatures)
    assert isinstance(unikd.teacher_features, tuple)
    assert isinstance(unikd.student_features, tuple)


def test_the_choice_is_printed_once_and_saved(capsys):
    teacher, student = PAIRS["cnn->vit"]()
    distiller = Distiller(teacher, student)
    assert capsys.readouterr().out.splitlines() == [
        "keras_unikd: automatic taps of teacher 't': "
        "teacher_features=['t_stage1', 't_stage2', 't_stage3', 't_pool']",
        "keras_unikd: automatic taps of student 's': student_features=['s_norm', 's_cls']",
        "keras_unikd: student 's_norm' (None, 17, 8): 1 prefix token set aside, "
        "4x4 grid -> (None, 4, 4, 8)",
    ]
    config = distiller.get_config()
    assert config["terms"][-1]["config"]["student_features"] == ["s_norm", "s_cls"]
    assert config["student_token_layouts"] == {"s_norm": [1, 4, 4]}
    clone = Distiller.from_config(config)
    assert capsys.readouterr().out == ""  # explicit names and layouts: nothing to report
    assert clone.terms[-1].student_features == ("s_norm", "s_cls")
    assert clone.student_token_layouts == {"s_norm": [1, 4, 4]}


def test_explicit_features_print_nothing(capsys, pair):
    Distiller(*pair, teacher_features=["t_stage1"], student_features=["s_stage1", "s_pool"])
    assert capsys.readouterr().out == ""


def test_without_a_distribution_loss_nothing_is_tapped(pair):
    distiller = Distiller(*pair, distribution_loss=None)
    assert [type(term).__name__ for term in distiller.terms] == ["CrossEntropy", "DKD"]
    assert distiller._student_tap.feature_paths == ()


def test_token_layouts_of_the_distiller(capsys):
    teacher, student = make_network(8, "t"), tiny_vit("s")
    distiller = Distiller(
        teacher,
        student,
        teacher_features=["t_stage1"],
        student_features=["s_block1_out", "s_cls"],
        student_token_layouts={"s_block1_out": "sequence"},
    )
    assert capsys.readouterr().out == ""
    assert distiller._student_tap.feature_shapes == [(None, 17, 1, 8), (None, 8)]
    assert distiller.get_config()["student_token_layouts"] == {"s_block1_out": [0, 17, 1]}
    with pytest.raises(ValueError, match="does not tap"):
        Distiller(teacher, student, student_token_layouts={"s_logits": "grid"})


def test_the_term_takes_auto_too(pair):
    unikd = terms.UniKDFeatures("auto", ["s_stage2", "s_pool"])
    assert unikd.get_config()["teacher_features"] == "auto"
    with pytest.raises(ValueError, match="'auto', which the Distiller resolves"):
        unikd.build(None)
    Distiller(*pair, terms=[terms.CrossEntropy(), unikd])
    assert unikd.teacher_features == ("t_stage1", "t_stage2", "t_stage3", "t_pool")
