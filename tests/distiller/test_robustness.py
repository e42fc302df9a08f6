"""The bad-input matrix of docs/robustness.md: one test per row.

Rows already covered elsewhere: teacher and student with different input
shapes or class counts, labels of the wrong rank, `compile(loss=...)`
(tests/distiller/test_distiller.py).
"""

import os
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_unikd
from conftest import make_network
from keras_unikd import cli
from keras_unikd import terms
from keras_unikd.distiller_checks import check_input_scale
from keras_unikd.distiller_checks import check_not_empty
from keras_unikd.distiller_checks import first_batch
from keras_unikd.keyword_form import terms_from_keywords

STUDENT_FEATURES = ["s_stage1", "s_stage2", "s_stage3", "s_pool"]


def unikd(teacher, student, **kwargs):
    options = dict(
        teacher_features=["t_stage1_preact"],
        student_features=STUDENT_FEATURES,
        distribution_loss="gaussian",
        warmup_epochs=0,
        seed=0,
    )
    options.update(kwargs)
    return keras_unikd.Distiller(teacher, student, **options)


@pytest.fixture(scope="module")
def compiled():
    """One compiled Distiller for the tests that train (compiling is slow)."""
    keras.utils.set_random_seed(0)
    distiller = unikd(make_network(8, "t"), make_network(4, "s"))
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), metrics=["accuracy"],
                      jit_compile=keras.backend.backend() != "torch")
    distiller.optimizer.build(distiller.trainable_variables)
    state = [np.array(variable) for variable in distiller.optimizer.variables]
    return distiller, distiller.get_weights(), state


@pytest.fixture
def distiller(compiled):
    distiller, weights, optimizer_state = compiled
    yield distiller
    distiller.set_weights(weights)
    for variable, value in zip(distiller.optimizer.variables, optimizer_state):
        variable.assign(value)


def data(examples=24):
    """Three batches of 8."""
    rng = np.random.default_rng(1)
    x = rng.random((examples, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 5, size=(examples,)).astype("int32")
    return x, y


def fit(distiller, x, y, raise_error=True, **kwargs):
    """Fits with a guard that raises (the default guard prints and stops)."""
    guard = keras_unikd.callbacks.NonFiniteLossGuard(raise_error=raise_error)
    return distiller.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[guard], **kwargs)


# --- labels out of range ---------------------------------------------------


@pytest.mark.parametrize("bad_label", [5, -1])
def test_labels_out_of_range_give_a_nan_total_and_finite_terms(pair, batch, bad_label):
    x, y = batch
    y = y.copy()
    y[3] = bad_label
    distiller = unikd(*pair)
    total, terms, _ = distiller.compute_distillation_losses(x, y, training=False)
    assert np.isnan(float(total))
    assert all(np.isfinite(float(value)) for value in terms.values())
    assert np.isnan(float(distiller.compute_student_loss(x, y)[0]))


@pytest.mark.parametrize("bad_label", [5, -1])
def test_labels_out_of_range_stop_fit_with_the_fix(distiller, bad_label):
    x, y = data()
    y[10] = bad_label  # in the second batch
    with pytest.raises(
        ValueError, match=r"Epoch 1, batch 2: a batch has labels outside \[0, 5\).*0\.\.4"
    ):
        fit(distiller, x, y, epochs=2)
    # The bad batch's update is zero: the student stays finite.
    assert all(np.all(np.isfinite(np.array(w))) for w in distiller.student.weights)


def test_validation_labels_out_of_range_are_named(distiller):
    x, y = data()
    bad = y.copy()
    bad[0] = 7
    with pytest.raises(ValueError, match=r"End of epoch 1: val_loss is nan.*validation data"):
        fit(distiller, x, y, validation_data=(x, bad))


def evaluate_warnings(distiller, x, y=None, **kwargs):
    """`(result, messages)`: `evaluate`'s result and its `Distiller.evaluate` warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = distiller.evaluate(x, y, batch_size=8, verbose=0, **kwargs)
    return result, [str(w.message) for w in caught if "Distiller.evaluate" in str(w.message)]


def test_evaluate_with_labels_out_of_range_warns_and_returns_nan(distiller):
    x, y = data()
    bad = y.copy()
    bad[[0, 9]] = [5, -1]
    named = (
        r"^Distiller.evaluate: the loss is nan: 2 of 24 labels are not class ids "
        r"\(e.g. -1, 5\).*class ids 0\.\.4"
    )
    result, messages = evaluate_warnings(distiller, x, bad)
    assert np.isnan(result[0]) and len(messages) == 1 and re.match(named, messages[0])
    result, messages = evaluate_warnings(distiller, x, bad, return_dict=True)
    assert np.isnan(result["loss"]) and re.match(named, messages[0])
    dataset = tf.data.Dataset.from_tensor_slices((x, bad)).batch(8)
    result, messages = evaluate_warnings(distiller, dataset)
    assert np.isnan(result[0]) and "labels outside [0, 5) or with a fractional part" in messages[0]
    x[3, 0, 0, 0] = np.nan  # the labels are fine: the inputs are named
    _, messages = evaluate_warnings(distiller, x, y)
    assert "the labels are class ids, so the inputs hold NaN or Inf" in messages[0]
    result, messages = evaluate_warnings(distiller, *data())
    assert np.isfinite(result[0]) and not messages
    # fit's validation is the guard's to report, not evaluate's.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="val_loss is nan"):
            fit(distiller, *data(), validation_data=(data()[0], bad))
    assert not [w for w in caught if "Distiller.evaluate" in str(w.message)]


def test_one_hot_labels_are_rejected_by_fit(distiller):
    x, y = data()
    with pytest.raises(ValueError, match="looks one-hot.*argmax"):
        fit(distiller, x, np.eye(5, dtype="float32")[y])
    with pytest.raises(ValueError, match="looks one-hot.*argmax"):
        distiller.evaluate(x, np.eye(5, dtype="float32")[y], verbose=0)
    # The error left the Distiller intact: with the fix, it trains.
    assert np.isfinite(fit(distiller, x, y).history["loss"][0])


# --- labels with a fractional part ------------------------------------------


def test_fractional_labels_are_refused_before_training(distiller):
    x, y = data()
    with pytest.raises(
        ValueError, match=r"integer class ids.*fractional part \(e\.g\. \d\.5\).*argmax"
    ):
        fit(distiller, x, y + 0.5)
    assert float(keras.ops.convert_to_numpy(distiller.training_step)) == 0.0


def test_whole_number_float_labels_train(distiller):
    x, y = data()
    assert np.isfinite(fit(distiller, x, y.astype("float32")).history["loss"][0])


def test_fractional_labels_in_a_later_batch_stop_fit(distiller):
    x, y = data()
    y = y.astype("float32")
    y[10] = 2.5  # in the second batch; the first-batch check cannot see it
    with pytest.raises(
        ValueError,
        match=r"Epoch 1, batch 2: a batch has labels outside \[0, 5\) or with a fractional part",
    ):
        fit(distiller, x, y)


def test_string_labels_are_refused_with_the_fix(distiller):
    x, y = data()
    names = np.array(["cat", "dog", "fox", "owl", "bee"])[y]
    refused = r"^Labels must be integer class ids 0\.\.4, but the first batch has strings "
    with pytest.raises(ValueError, match=refused + r"\(dtype <U3, e.g. '.*'\).*StringLookup"):
        fit(distiller, x, names)
    with pytest.raises(ValueError, match=refused + r"\(dtype object.*np.unique"):
        fit(distiller, tf.data.Dataset.from_tensor_slices((x, names)).batch(8), None)
    with pytest.raises(ValueError, match=refused):
        distiller.evaluate(x, names, verbose=0)
    # In validation_data only: refused before training, not at the end of epoch 1.
    in_validation = r"^Labels must be integer class ids 0\.\.4, but validation_data's first batch"
    with pytest.raises(ValueError, match=in_validation):
        distiller.fit(x, y, validation_data=(x, names), epochs=1, verbose=0)
    assert float(keras.ops.convert_to_numpy(distiller.training_step)) == 0.0


def test_fractional_labels_give_a_nan_total_and_finite_terms(pair, batch):
    x, y = batch
    y = y.astype("float32")
    y[3] = 1.5
    distiller = unikd(*pair)
    total, terms, _ = distiller.compute_distillation_losses(x, y, training=False)
    assert np.isnan(float(total))
    assert all(np.isfinite(float(value)) for value in terms.values())
    assert np.isnan(float(distiller.compute_student_loss(x, y)[0]))


# --- non-finite values -----------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_inputs_stop_fit_naming_the_first_term(distiller, value):
    x, y = data()
    x[12, 3, 3, 0] = value
    with pytest.raises(
        RuntimeError, match=r"Epoch 1, batch 2: the loss term 'ce_loss' became non-finite first"
    ):
        fit(distiller, x, y)


def test_broken_teacher_is_named_by_its_terms(distiller):
    x, y = data()
    kernel = distiller.teacher.get_layer("t_logits").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    with pytest.raises(RuntimeError) as error:
        fit(distiller, x, y)
    message = str(error.value)
    assert "Epoch 1, batch 1: the loss term 'dkd_loss' became non-finite first" in message
    assert "also non-finite in this batch: consistency_loss)" in message
    assert "ce_loss" not in message and "feature_loss" not in message


def test_the_default_guard_stops_with_a_message(distiller, capsys):
    x, y = data()
    x[20] = np.nan  # third batch
    history = distiller.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    assert history.epoch == [0]
    output = capsys.readouterr().out
    assert "Epoch 1, batch 3: the loss term 'ce_loss' became non-finite first" in output
    assert output.count("non-finite first") == 1  # reported once, not again at the epoch's end


# --- inputs on another scale than the teacher's --------------------------------


def test_integer_images_reaching_a_teacher_without_rescaling_are_named(distiller):
    x, y = data()
    with pytest.warns(
        UserWarning,
        match=r"integer images \(dtype uint8, values in \[\d+, 25\d\]\) and the teacher 't' "
        r"has no Rescaling or Normalization layer.*x / 255.*Rescaling\(1 / 255\)",
    ):  # The check runs before training: no epoch is needed.
        fit(distiller, np.round(x * 255).astype("uint8"), y, epochs=0)


def test_huge_teacher_logits_name_the_input_range():
    teacher = make_network(8, "t")
    x, _ = data(8)
    far = x * 1e5
    logits = keras.ops.convert_to_numpy(teacher(far))
    with pytest.warns(
        UserWarning,
        match=r"'t' gives logits up to .* on the first batch \(inputs: dtype float32, "
        r"values in \[.*\]\): far beyond.*x / 255",
    ):
        check_input_scale(far, logits, teacher)
    with pytest.warns(UserWarning, match="gives non-finite logits"):
        check_input_scale(x, np.full((8, 5), np.nan), teacher)


def test_inputs_on_the_teachers_scale_pass():
    teacher = make_network(8, "t")
    inputs = keras.Input((12, 12, 1))
    scaled = keras.Model(inputs, teacher(keras.layers.Rescaling(1 / 255)(inputs)))
    pixels = np.full((2, 12, 12, 1), 255, "uint8")
    tokens = np.full((2, 7), 900, "int32")  # token ids are not images
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_input_scale(data(2)[0], np.ones((2, 5)), teacher)
        check_input_scale(pixels, np.ones((2, 5)), scaled)  # a nested Rescaling counts
        check_input_scale(tokens, np.ones((2, 5)), teacher)


# --- reading the first batch ------------------------------------------------


class TwoBatches(keras.utils.PyDataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        x, y = data(16)
        return x[8 * index : 8 * index + 8], y[8 * index : 8 * index + 8]


def test_the_first_batch_is_read_without_taking_it_from_the_data():
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    batches = (batch for batch in [(x[:8], y[:8]), (x[8:16], y[8:16]), (x[16:], y[16:])])
    np.testing.assert_array_equal(first_batch(x, y, batch_size=4)[0], x[:4])
    np.testing.assert_array_equal(first_batch(dataset)[1], y[:8])
    np.testing.assert_array_equal(first_batch(TwoBatches())[0], data(16)[0][:8])
    assert first_batch(batches) is None  # a generator would lose a batch: not read
    assert len(list(batches)) == 3


# --- temperatures and weights ------------------------------------------------

FEATURES = dict(teacher_features=["t_stage1"], student_features=["s_stage1"])


@pytest.mark.parametrize(
    "options,named",
    [
        (dict(temperature=0.0), "DKD temperature must be > 0"),
        (dict(temperature=-1.0), "DKD temperature must be a finite number > 0"),
        (dict(temperature=float("nan")), "DKD temperature must be a finite number > 0"),
        (dict(temperature=0.0, logits_loss="kd"), "KD temperature must be > 0"),
        (dict(distribution_temperature=0.0), "UniKDFeatures temperature must be > 0"),
        (dict(logits_loss="mlkd", mlkd_temperatures=(4.0, 0.0)), "MLKD temperature must be > 0"),
        (dict(ce_weight=-1.0), "CrossEntropy weight must be a finite number >= 0"),
        (dict(logits_weight=-1.0), "DKD weight must be"),
        (dict(logits_weight=-1.0, logits_loss="mlkd"), "MLKD weight must be"),
        (dict(feature_weight=-1.0), "feature_weight must be"),
        (dict(consistency_weight=-1.0), "consistency_weight must be"),
        (dict(dkd_alpha=-1.0), "DKD alpha must be"),
        (dict(dkd_beta=-1.0), "DKD beta must be"),
    ],
)
def test_every_keyword_temperature_and_weight_is_checked(options, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        terms_from_keywords(**FEATURES, **options)


@pytest.mark.parametrize(
    "build,named",
    [
        (lambda: terms.CrossEntropy(weight=-1.0), "CrossEntropy weight"),
        (lambda: terms.KD(temperature=-2.0), "KD temperature"),
        (lambda: terms.KD(weight=-1.0), "KD weight"),
        (lambda: terms.DKD(temperature=0.0), "DKD temperature"),
        (lambda: terms.DKD(alpha=-1.0), "DKD alpha"),
        (lambda: terms.DKD(beta=-1.0), "DKD beta"),
        (lambda: terms.DKD(weight=float("inf")), "DKD weight"),
        (lambda: terms.MLKD(temperatures=[0.0]), "MLKD temperature"),
        (lambda: terms.MLKD(weight=-1.0), "MLKD weight"),
        (lambda: terms.MLKD(instance_weight=-1.0), "MLKD instance_weight"),
        (lambda: terms.MLKD(class_weight=-1.0), "MLKD class_weight"),
        (lambda: terms.MLKD(batch_weight=-1.0), "MLKD batch_weight"),
        (lambda: terms.UniKDFeatures(["t"], ["s"], temperature=0.0), "UniKDFeatures temperature"),
        (lambda: terms.UniKDFeatures(["t"], ["s"], feature_weight=-1.0), "feature_weight"),
        (lambda: terms.UniKDFeatures(["t"], ["s"], consistency_weight=-1.0), "consistency_weight"),
        (lambda: terms.UniKDFeatures(["t"], ["s"], weight=-1.0), "UniKDFeatures weight"),
        (lambda: terms.FitNetHint("t", "s", weight=-1.0), "FitNetHint weight"),
    ],
)
def test_every_term_temperature_and_weight_is_checked(build, named):
    must = r" must be (> 0|a finite number >=? 0)"
    with pytest.raises(ValueError, match=re.escape(named) + must):
        build()


@pytest.mark.parametrize(
    "build,named",
    [
        (lambda: terms.KD(temperature="4"), "KD temperature"),
        (lambda: terms.DKD(temperature="4"), "DKD temperature"),
        (lambda: terms.MLKD(temperatures=[4.0, "4"]), "MLKD temperature"),
        (lambda: terms.DIST(temperature="4"), "DIST temperature"),
        (lambda: terms.ContrastiveRepresentation(temperature="4"),
         "ContrastiveRepresentation temperature"),
        (lambda: terms.UniKDFeatures(["t"], ["s"], temperature="4"), "UniKDFeatures temperature"),
        (lambda: terms_from_keywords(**FEATURES, temperature="4"), "DKD temperature"),
        (lambda: terms_from_keywords(**FEATURES, distribution_temperature="4"),
         "UniKDFeatures temperature"),
    ],
)
def test_a_temperature_that_is_not_a_number_is_named(build, named):
    message = f"{named} must be a number > 0; got '4' (a str)."
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_a_feature_given_as_one_string_is_one_layer(pair):
    distiller = keras_unikd.Distiller(
        *pair, terms=[terms.CrossEntropy(), terms.UniKDFeatures("t_stage1", "s_stage1")]
    )
    assert distiller.terms[1].teacher_features == ("t_stage1",)
    assert distiller.terms[1].student_features == ("s_stage1",)


# --- empty data ------------------------------------------------------------


def empty_inputs():
    x, y = data(0)
    some_x, some_y = data(4)
    return {
        "arrays": (x, y),
        "dataset": (tf.data.Dataset.from_tensor_slices((x, y)).batch(8), None),
        "filtered": (
            tf.data.Dataset.from_tensor_slices((some_x, some_y))
            .filter(lambda a, b: b > 9)
            .batch(8),
            None,
        ),
        "drop_remainder": (
            tf.data.Dataset.from_tensor_slices((some_x, some_y)).batch(8, drop_remainder=True),
            None,
        ),
    }


class NoBatches(keras.utils.PyDataset):
    def __len__(self):
        return 0

    def __getitem__(self, index):
        raise IndexError(index)


@pytest.mark.parametrize("kind", ["arrays", "dataset", "filtered", "drop_remainder", "py_dataset"])
def test_empty_training_data_is_rejected(distiller, kind):
    x, y = (NoBatches(), None) if kind == "py_dataset" else empty_inputs()[kind]
    with pytest.raises(ValueError, match="The x passed to fit is empty"):
        distiller.fit(x, y, verbose=0)


def test_data_that_yields_batches_passes_the_emptiness_check():
    x, y = data(4)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    for value in (
        None,
        x,
        {"images": x},
        (x, y),
        dataset.filter(lambda a, b: b >= 0).batch(2),  # unknown cardinality: peeked
        dataset.repeat().batch(2),  # infinite
        (batch for batch in [(x, y)]),  # a generator is left to Keras
    ):
        check_not_empty(value, "x")


def test_empty_validation_data_is_rejected(distiller):
    x, y = data()
    with pytest.raises(ValueError, match="The validation_data passed to fit is empty"):
        fit(distiller, x, y, validation_data=data(0))


def test_fit_before_compile(pair):
    x, y = data()
    with pytest.raises(ValueError, match=r"Call compile\(optimizer=.*before fit"):
        unikd(*pair).fit(x, y, verbose=0)


# --- models ----------------------------------------------------------------


def test_tapped_layer_off_the_path_to_the_logits(pair):
    teacher, _ = pair
    inputs = keras.Input((12, 12, 1))
    hidden = keras.layers.Conv2D(4, 3, name="s_stage1")(inputs)
    keras.layers.Conv2D(4, 3, name="s_side")(inputs)  # feeds nothing
    pooled = keras.layers.GlobalAveragePooling2D(name="s_pool")(hidden)
    student = keras.Model(inputs, keras.layers.Dense(5)(pooled))
    with pytest.raises(
        ValueError, match=r"No layer named 's_side'.*only the layers on the path from its inputs"
    ):
        unikd(teacher, student, student_features=["s_stage1", "s_side"])


def test_unbuilt_sequential_teacher(pair):
    _, student = pair
    teacher = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match=r"is not built.*keras.Input"):
        keras_unikd.Distiller(teacher, student, logits_loss="kd", distribution_loss=None)


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(5)

    def call(self, inputs):
        return self.dense(self.flatten(inputs))


def test_subclassed_teacher_and_the_suggested_wrapper(pair):
    _, student = pair
    teacher = Subclassed()
    with pytest.raises(ValueError, match=r"subclassed model.*wrap it"):
        keras_unikd.Distiller(teacher, student, logits_loss="kd", distribution_loss=None)
    inputs = keras.Input((12, 12, 1))
    wrapped = keras.Model(inputs, teacher(inputs))
    distiller = keras_unikd.Distiller(wrapped, student, logits_loss="kd", distribution_loss=None)
    x, y = data(8)
    assert np.isfinite(float(distiller.compute_distillation_losses(x, y)[0]))


def test_student_sharing_layers_with_the_teacher_is_rejected(pair):
    teacher, _ = pair
    inputs = keras.Input((12, 12, 1))
    x = teacher.get_layer("t_conv1")(inputs)  # reused, not copied
    x = keras.layers.GlobalAveragePooling2D()(x)
    student = keras.Model(inputs, keras.layers.Dense(5)(x))
    with pytest.raises(
        ValueError,
        match=r"shares 2 weight\(s\) with the teacher \('t_conv1/kernel', 't_conv1/bias'\)"
        r".*clone_model",
    ):
        keras_unikd.Distiller(teacher, student, logits_loss="kd", distribution_loss=None)
    assert teacher.trainable and student.trainable_weights  # nothing was frozen


# --- saved models ----------------------------------------------------------


def test_missing_teacher_file(pair, tmp_path):
    _, student = pair
    missing = os.path.join(tmp_path, "teacher.keras")
    with pytest.raises(
        FileNotFoundError, match=r"teacher file '.*teacher.keras' does not exist.*teacher.save"
    ):
        keras_unikd.Distiller(missing, student, logits_loss="kd", distribution_loss=None)
    config = unikd(*pair).get_config()
    config["teacher"] = missing
    with pytest.raises(FileNotFoundError, match="teacher file"):
        keras_unikd.Distiller.from_config(config)


def test_teacher_given_by_path(pair, batch, tmp_path):
    teacher, student = pair
    path = os.path.join(tmp_path, "teacher.keras")
    teacher.save(path)
    config = unikd(teacher, student).get_config()
    config["teacher"] = path
    distiller = keras_unikd.Distiller.from_config(config)
    assert not distiller.teacher.trainable
    x, _ = batch
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(distiller.teacher(x)),
        keras.ops.convert_to_numpy(teacher(x)),
        rtol=1e-6,
    )


def damaged_teacher_files(pair, directory):
    """A garbage file, a truncated archive and one with a flipped byte, as `.keras` files."""
    good = os.path.join(directory, "good.keras")
    pair[0].save(good)
    with open(good, "rb") as file:
        archive = bytearray(file.read())
    flipped = bytearray(archive)
    flipped[len(archive) // 2] ^= 0xFF
    damaged = {"garbage": b"garbage" * 100, "truncated": archive[: len(archive) // 2],
               "flipped": flipped}
    for name, content in damaged.items():
        with open(os.path.join(directory, f"{name}.keras"), "wb") as file:
            file.write(content)
    return [os.path.join(directory, f"{name}.keras") for name in damaged]


def test_corrupt_teacher_file(pair, tmp_path, capsys):
    paths = damaged_teacher_files(pair, str(tmp_path))
    for path, problem in zip(paths, ["not a zip archive", "not a zip archive", "bad checksum"]):
        with pytest.raises(
            ValueError,
            match=rf"^The teacher file '{re.escape(path)}' exists but is not a readable Keras "
            rf"model archive \({problem}.*\): it may be truncated or corrupt.*Save the "
            r"teacher again \(teacher.save",
        ):
            keras_unikd.Distiller(path, pair[1], logits_loss="kd", distribution_loss=None)
    argv = ["distill", "--preset", "cifar100_vgg13_vgg8", "--teacher", paths[0],
            "--output-dir", str(tmp_path / "runs")]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert f"The teacher file {paths[0]!r} exists but is not a readable Keras model" in error
    assert "keras-unikd train-teacher --preset cifar100_vgg13_vgg8" in error


class UnregisteredTerm(terms.DistillationTerm):
    """A custom term whose class Keras does not know."""

    def call(self, record):
        return {self.loss_names[0]: keras.ops.mean(keras.ops.square(record.student_logits))}


@keras.saving.register_keras_serializable(package="keras_unikd_tests")
class RegisteredTerm(UnregisteredTerm):
    pass


def test_custom_term_class_not_registered(pair, tmp_path):
    for term_class in (UnregisteredTerm, RegisteredTerm):
        distiller = keras_unikd.Distiller(
            *pair, terms=[terms.CrossEntropy(), term_class(weight=0.5, name="mine")]
        )
        distiller.save(str(tmp_path / f"{term_class.__name__}.keras"))
    path = str(tmp_path / "UnregisteredTerm.keras")
    with pytest.raises(ValueError) as error:
        keras.saving.load_model(path)
    first_line = str(error.value).splitlines()[0]
    assert re.match(
        r"The Distiller's term 'mine' has class 'UnregisteredTerm' \(module '.*test_robustness'\), "
        r"which Keras cannot find: decorate the class with "
        r"@keras.saving.register_keras_serializable\(\).*custom_objects=\{'UnregisteredTerm': "
        r"UnregisteredTerm\} to keras.saving.load_model",
        first_line,
    )
    assert isinstance(error.value.__cause__, TypeError)
    loaded = keras.saving.load_model(path, custom_objects={"UnregisteredTerm": UnregisteredTerm})
    assert isinstance(loaded.terms[1], UnregisteredTerm) and loaded.terms[1].weight == 0.5
    loaded = keras.saving.load_model(str(tmp_path / "RegisteredTerm.keras"))
    assert isinstance(loaded.terms[1], RegisteredTerm)
