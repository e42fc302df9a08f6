"""Every feature method of the method table with `"auto"` taps (its default).

Each term keeps, of the layers `keras_unikd.auto_taps` finds, those its
method reads; then all of them train together a few steps on the tiny
conftest pair, on keras-hub's ResNet and ViT classifiers and on a
keras.applications model, on every backend.
"""

import warnings

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import make_network
from keras_unikd import terms
from keras_unikd.data import with_example_index
from keras_unikd.methods import METHODS
from keras_unikd.methods import method_terms
from keras_unikd.methods import reads_train_labels

TAP_SETTINGS = {"teacher_feature", "teacher_features"}
# The methods built on UniKD's terms choose every stage and the pooled
# vector; tests/distiller/test_keras_hub.py trains them on these models.
FEATURE_METHODS = sorted(
    name
    for name, method in METHODS.items()
    if TAP_SETTINGS & method.setting_names and name not in ("unikd", "unimlkd")
)


# OFD reads the input of each stage end's ReLU layer, which the conftest pair
# (a Conv2D's own activation), the ViT (no ReLU) and MobileNetV2 (ReLU6) lack;
# tests/terms/test_ofd.py tests its "auto" on the zoo's ResNets and its error.
NO_PRE_RELU = ("ofd",)


def feature_terms(train_labels, exclude=()):
    """Each feature method's default terms, less their cross-entropy, plus one
    (CRD with the training labels and few negatives)."""
    data = {"train_labels": train_labels, "crd_negatives": 4}
    built = [terms.CrossEntropy()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the reference-weight warnings
        for name in sorted(set(FEATURE_METHODS) - set(exclude)):
            settings = data if reads_train_labels(name) else {}
            built += [
                term
                for term in method_terms(name, **settings)
                if not isinstance(term, terms.CrossEntropy)
            ]
    return built


def test_the_table_has_the_feature_methods():
    assert {
        "fitnet", "at", "nst", "sp", "pkt", "rkd", "vid", "crd", "ofd", "kdsvd", "reviewkd",
    } <= set(FEATURE_METHODS)  # fmt: skip


def test_each_term_keeps_the_layers_its_method_reads():
    keras.utils.set_random_seed(0)
    teacher, student = make_network(8, "t"), make_network(4, "s")
    terms_ = feature_terms(np.arange(8) % 5, exclude=NO_PRE_RELU)
    distiller = keras_unikd.Distiller(teacher, student, terms=terms_)
    chosen = {term.name: (term.teacher_features, term.student_features) for term in distiller.terms}
    stages = ("stage1", "stage2", "stage3")
    assert chosen["at"] == tuple(tuple(f"{side}_{s}" for s in stages) for side in "ts")
    assert chosen["hint"] == (("t_stage2",), ("s_stage2",))
    assert chosen["sp"] == (("t_stage3",), ("s_stage3",))
    assert chosen["pkt"] == chosen["rkd"] == chosen["crd"] == (("t_pool",), ("s_pool",))
    for name in ("nst", "vid", "kdsvd"):
        assert chosen[name] == chosen["at"], name
    assert chosen["reviewkd"] == tuple(paths + (f"{side}_pool",) for paths, side in zip(
        chosen["at"], "ts"
    ))


def test_stage_pairs_line_up_from_the_deepest():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="only_stage")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="s_pool")(x)
    student = keras.Model(inputs, keras.layers.Dense(5)(x), name="s")
    at = terms.AttentionTransfer("auto", "auto")
    keras_unikd.Distiller(make_network(8, "t"), student, terms=[at])
    assert (at.teacher_features, at.student_features) == (("t_stage3",), ("only_stage",))
    named = terms.AttentionTransfer("auto", ["only_stage"], name="named")
    keras_unikd.Distiller(make_network(8, "t"), student, terms=[named])
    assert named.teacher_features == ("t_stage3",)


def test_without_a_pooled_vector_the_deepest_stage_is_pooled():
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(5, 3, name="conv")(inputs)  # logits: the pooled map itself
    student = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="s")
    pkt = terms.ProbabilisticTransfer("auto", "auto")
    keras_unikd.Distiller(make_network(8, "t"), student, terms=[pkt])
    assert (pkt.teacher_features, pkt.student_features) == (("t_pool",), ("conv",))


def train_a_few_steps(teacher, student, x, y, exclude=()):
    distiller = keras_unikd.Distiller(teacher, student, terms=feature_terms(y, exclude))
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    before = [np.array(keras.ops.convert_to_numpy(w)) for w in student.trainable_weights]
    history = distiller.fit(*with_example_index(x, y), batch_size=4, epochs=1, verbose=0)
    after = [np.array(keras.ops.convert_to_numpy(w)) for w in student.trainable_weights]
    for name in distiller.loss_term_names:
        assert np.isfinite(history.history[name][0]), name
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_the_tiny_pair_trains():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 12, 12, 1), dtype=np.float32), rng.integers(0, 5, 8)
    train_a_few_steps(make_network(8, "t"), make_network(4, "s"), x, y, exclude=NO_PRE_RELU)


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_keras_hub_models_train(family):
    hub = pytest.importorskip("test_keras_hub")
    build = {"resnet": hub.resnet_classifier, "vit": hub.vit_classifier}[family]
    keras.utils.set_random_seed(0)
    width = {"resnet": (32, 16), "vit": (16, 8)}[family]
    teacher, student = build(width[0], "teacher"), build(width[1], "student")
    # KDSVD relates consecutive stages; the ViT's encoder is one.
    exclude = ("kdsvd", *NO_PRE_RELU) if family == "vit" else ()
    if exclude:
        with pytest.raises(ValueError, match="KDSVD compares consecutive stages"):
            keras_unikd.Distiller(teacher, student, terms=method_terms("kdsvd"))
    train_a_few_steps(teacher, student, *hub.images(), exclude=exclude)


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="JAX creates and first runs MobileNetV2 op by op: over 60 s on the 2-core CPU; "
    "the keras-hub models above train the same terms under JAX",
)
def test_keras_applications_models_train():
    keras.utils.set_random_seed(0)
    teacher = keras.applications.MobileNetV2(
        weights=None, alpha=0.5, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    # A student with the teacher's resolutions: KDSVD pairs maps of the same width.
    student = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=10, classifier_activation=None,
        name="student",
    )
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 8)
    train_a_few_steps(teacher, student, x, y, exclude=NO_PRE_RELU)
