"""The Fashion-MNIST experiment behind the accuracy benchmark and the sweep."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from keras_unikd.data import load_fashion_mnist
from keras_unikd.experiments import fashion_mnist as experiment
from keras_unikd.methods import METHODS
from keras_unikd.methods import VARIANTS
from keras_unikd.teacher_source import OnlineTeacher

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the experiment is backend-agnostic Keras; its training runs once, under TensorFlow",
)


@pytest.fixture(scope="module")
def small():
    """Real images (Fashion-MNIST, or the digits fallback), a few hundred of them."""
    dataset = load_fashion_mnist(verbose=False)
    return dataclasses.replace(
        dataset,
        x_train=dataset.x_train[:256],
        y_train=dataset.y_train[:256],
        x_test=dataset.x_test[:128],
        y_test=dataset.y_test[:128],
    )


RECIPE = experiment.Recipe(teacher_epochs=1, student_epochs=1, subset=64, batch_size=32)


def configs(terms):
    """The terms' configs, names aside."""
    return [{k: v for k, v in term.get_config().items() if k != "name"} for term in terms]


def test_the_paired_methods_differ_only_in_what_is_compared():
    methods = experiment.METHODS
    assert set(methods) == set(METHODS) | set(VARIANTS)
    terms = {name: experiment.method_model_terms(setting) for name, setting in methods.items()}
    # UniKD is DKD plus its feature terms, UniMLKD MLKD plus them (at T = 4).
    assert configs(terms["unikd"][:2]) == configs(terms["dkd"])
    assert configs(terms["unimlkd"][:2]) == configs(terms["mlkd"])
    for name, temperature in (("unikd", 1.0), ("unimlkd", 4.0)):
        features = terms[name][2]
        assert list(features.student_features) == experiment.UNIKD_TAPS["student_features"]
        assert (features.distribution_loss, features.temperature) == ("sampled", temperature)
    ce, mlkd = terms["mlkd"]
    assert (ce.weight, mlkd.weight, mlkd.warmup_epochs) == (1.0, 1.0, 0)
    assert (mlkd.instance_weight, mlkd.class_weight, mlkd.batch_weight) == (1.0, 0.025, 0.5)
    for variant in VARIANTS.values():
        expected = variant.transform(terms[variant.method])
        if variant.name in ("mlkd+ls", "unimlkd+ls"):
            # `+ls` weights the level it standardizes (the instance level) 9
            # and leaves the Gram levels as plain MLKD weights them.
            mlkd = terms[variant.name][1]
            effective = [mlkd.weight * w for w in (mlkd.instance_weight, mlkd.class_weight,
                                                   mlkd.batch_weight)]
            assert effective == pytest.approx([9.0, 0.025, 0.5])
            expected[1] = type(expected[1]).from_config(
                dict(expected[1].get_config(), class_weight=mlkd.class_weight,
                     batch_weight=mlkd.batch_weight)
            )
        assert configs(terms[variant.name]) == configs(expected), variant.name


def test_teacher_cache_is_keyed_by_its_training(small, tmp_path):
    stem = experiment.teacher_cache_stem(small, RECIPE)
    assert stem == f"teacher_{small.name}_256img_1ep_batch32_lr0.05_seed0"
    other = [
        dataclasses.replace(RECIPE, teacher_epochs=10),
        dataclasses.replace(RECIPE, batch_size=128),
        dataclasses.replace(RECIPE, learning_rate=0.1),
    ]
    assert len({stem, *(experiment.teacher_cache_stem(small, r) for r in other)}) == 4
    # A teacher cached under the old name (epochs and seed only) is not reused.
    old = tmp_path / f"teacher_{small.name}_1ep_seed0"
    experiment.fashion_teacher(small.image_shape, small.num_classes).save(f"{old}.keras")
    old.with_suffix(".json").write_text('{"last_accuracy": 0.99}')
    teacher_train, _, test = experiment.make_pipelines(small, RECIPE, seed=0)
    _, record = experiment.teacher_or_cached(small, teacher_train, test, RECIPE, str(tmp_path))
    assert record["path"] == str(tmp_path / f"{stem}.keras")
    assert record["epochs"] == 1 and len(record["val_accuracy"]) == 1
    assert json.loads((tmp_path / f"{stem}.json").read_text())["last_accuracy"] == (
        record["last_accuracy"]
    )
    _, cached = experiment.teacher_or_cached(small, teacher_train, test, RECIPE, str(tmp_path))
    assert cached == record


def test_train_student_one_and_two_views(small):
    teacher = experiment.fashion_teacher(small.image_shape, small.num_classes)
    kd, kd_student = experiment.train_student("kd", teacher, small, RECIPE, seed=1, verbose=0)
    mlkd, _ = experiment.train_student("mlkd", teacher, small, RECIPE, seed=1, verbose=0)
    assert (kd["views"], mlkd["views"]) == (1, 2)
    assert {"mlkd_instance_loss", "mlkd_class_loss", "mlkd_batch_loss"} <= set(mlkd["history"])
    assert kd["seed"] == 1 and kd["seconds"] > 0 and kd["cpu_seconds"] > 0
    # The test accuracy is the student's own, on every test image.
    _, _, test = experiment.make_pipelines(small, RECIPE, seed=1)
    predicted = np.argmax(kd_student.predict(test, verbose=0), axis=-1)
    assert kd["last_accuracy"] == pytest.approx(np.mean(predicted == small.y_test))
    assert kd["history"]["val_accuracy"] == [kd["last_accuracy"]]


def test_same_seed_same_student_initialisation(small):
    teacher = experiment.fashion_teacher(small.image_shape, small.num_classes)
    students = [
        experiment.build_student_model(method, teacher, small, RECIPE, 2, seed=5)[1]
        for method in ("kd", "unimlkd", "student")
    ]
    for student in students[1:]:
        for a, b in zip(students[0].weights, student.weights):
            np.testing.assert_array_equal(*map(keras.ops.convert_to_numpy, (a, b)))
    with pytest.raises(ValueError, match="Unknown method 'no-such-method'"):
        experiment.build_student_model("no-such-method", teacher, small, RECIPE, 2, seed=0)


def test_cached_teacher_runs(small, tmp_path, monkeypatch):
    from keras_unikd import cache as teacher_cache

    teacher = experiment.fashion_teacher(small.image_shape, small.num_classes)
    # One cache serves every method that can read one: the logits and the
    # pooled stage-1 feature of UniKD's heads, on both views.
    needs = experiment.cached_teacher_needs()
    assert (needs.logits, needs.pooled_features, needs.views) == (True, ("stage1_preact",), 2)
    cache = experiment.build_seed_cache(str(tmp_path / "seed1"), teacher, small, RECIPE, seed=1)
    x, y = experiment.student_subset(small, RECIPE, seed=1)
    # A method of each kind: the student alone, logit terms on one and two
    # views, UniKD's terms (with and without the aggregator) on each, FitNet.
    for method in ("student", "kd", "mlkd+ls", "unikd", "fdp-only", "unimlkd", "fitnet+kd"):
        model, _ = experiment.build_student_model(method, teacher, small, RECIPE, 2, seed=1)
        readable = method not in ("student", "fitnet+kd")
        assert experiment.reads_cached_teacher(model) == readable, method
        if readable:  # the cache holds what the method reads (else a ValueError)
            teacher_cache.open_teacher_cache(
                cache.directory, teacher, model.teacher_needs, x, y, seed=1,
                epochs=RECIPE.student_epochs, two_views=True,
                **experiment.augmentation(small),
            )

    def teacher_ran(*args, **kwargs):
        raise AssertionError("the teacher ran on a cached batch")

    with monkeypatch.context() as patch:
        patch.setattr(OnlineTeacher, "_forward", teacher_ran)
        kd, _ = experiment.train_student(
            "kd", teacher, small, RECIPE, seed=1, verbose=0, teacher_cache=cache
        )
        mlkd, _ = experiment.train_student(
            "mlkd", teacher, small, RECIPE, seed=1, verbose=0, teacher_cache=cache
        )
    fitnet, _ = experiment.train_student(
        "fitnet", teacher, small, RECIPE, seed=1, verbose=0, teacher_cache=cache
    )
    assert [(r["teacher_outputs"], r["views"]) for r in (kd, mlkd, fitnet)] == [
        ("cached", 1), ("cached", 2), ("online", 1),
    ]
    # One keyed epoch per `fit` epoch: the test accuracy once, the loss terms finite.
    for run in (kd, mlkd, fitnet):
        assert len(run["history"]["val_accuracy"]) == RECIPE.student_epochs
        assert all(np.isfinite(run["history"]["loss"]))
    with pytest.raises(ValueError, match="other training data .* and other seed"):
        experiment.build_seed_cache(str(tmp_path / "seed1"), teacher, small, RECIPE, seed=2)
