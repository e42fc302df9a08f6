"""StudentCheckpoint and NonFiniteLossGuard, driven epoch by epoch."""

import json
import os

import keras
import numpy as np
import pytest

import keras_unikd
from keras_unikd.callbacks import NonFiniteLossGuard
from keras_unikd.callbacks import StudentCheckpoint


@pytest.fixture
def distiller(pair):
    return keras_unikd.Distiller(*pair, logits_loss="kd", distribution_loss=None)


def saved_kernel(path):
    return np.array(keras.models.load_model(path).get_layer("s_logits").kernel)


def run_epochs(callback, distiller, values, first_epoch=0, monitor="val_accuracy"):
    """Runs `callback` through epochs whose student has kernel `epoch` and
    whose monitored value is `values[i]`."""
    callback.set_model(distiller)
    callback.on_train_begin()
    kernel = distiller.student.get_layer("s_logits").kernel
    for epoch, value in enumerate(values, start=first_epoch):
        callback.on_epoch_begin(epoch)
        kernel.assign(np.full(kernel.shape, float(epoch), "float32"))
        callback.on_epoch_end(epoch, {"loss": 1.0, monitor: value})


def test_saves_the_student_alone_when_the_monitor_improves(distiller, tmp_path):
    path = os.path.join(tmp_path, "best.keras")
    run_epochs(StudentCheckpoint(path), distiller, [0.5, 0.4, 0.7, 0.7])
    student = keras.models.load_model(path)
    assert not isinstance(student, keras_unikd.Distiller)
    assert student.count_params() == distiller.student.count_params()
    np.testing.assert_array_equal(saved_kernel(path), 2.0)  # epoch index 2: 0.7
    with open(path + ".json") as file:
        assert json.load(file) == {
            "monitor": "val_accuracy", "mode": "max", "best": 0.7, "epoch": 3
        }
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "best.keras.json"]  # no temporary files
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # a file like any other


def test_min_mode_and_saving_every_epoch(distiller, tmp_path):
    path = os.path.join(tmp_path, "best.keras")
    run_epochs(
        StudentCheckpoint(path, monitor="val_loss", mode="min"),
        distiller,
        [0.5, 0.3, 0.4],
        monitor="val_loss",
    )
    np.testing.assert_array_equal(saved_kernel(path), 1.0)
    latest = os.path.join(tmp_path, "latest.keras")
    run_epochs(StudentCheckpoint(latest, save_best_only=False), distiller, [0.9, 0.1])
    np.testing.assert_array_equal(saved_kernel(latest), 1.0)
    assert not os.path.exists(latest + ".json")


def test_a_resumed_run_keeps_the_best_of_the_run_before(distiller, tmp_path):
    path = os.path.join(tmp_path, "best.keras")
    run_epochs(StudentCheckpoint(path), distiller, [0.6, 0.8])
    # Resumed at epoch index 2 (as BackupAndRestore does): worse, then better.
    run_epochs(StudentCheckpoint(path), distiller, [0.7], first_epoch=2)
    np.testing.assert_array_equal(saved_kernel(path), 1.0)
    run_epochs(StudentCheckpoint(path), distiller, [0.7, 0.9], first_epoch=2)
    np.testing.assert_array_equal(saved_kernel(path), 3.0)
    # A run from epoch 0 starts afresh.
    run_epochs(StudentCheckpoint(path), distiller, [0.1])
    np.testing.assert_array_equal(saved_kernel(path), 0.0)


def test_a_failed_save_leaves_the_previous_checkpoint_whole(distiller, tmp_path, monkeypatch):
    path = os.path.join(tmp_path, "best.keras")
    checkpoint = StudentCheckpoint(path)
    run_epochs(checkpoint, distiller, [0.5])

    def crash_while_writing(filepath, *args, **kwargs):
        with open(filepath, "wb") as file:
            file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(distiller.student, "save", crash_while_writing)
    checkpoint.on_epoch_begin(1)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.on_epoch_end(1, {"val_accuracy": 0.9})
    np.testing.assert_array_equal(saved_kernel(path), 0.0)
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "best.keras.json"]


def test_checkpoint_arguments_and_missing_monitor(distiller, tmp_path):
    with pytest.raises(ValueError, match=r"ending in '.keras'"):
        StudentCheckpoint(os.path.join(tmp_path, "student.h5"))
    with pytest.raises(ValueError, match=r"Unknown mode='best'"):
        StudentCheckpoint(os.path.join(tmp_path, "s.keras"), mode="best")
    checkpoint = StudentCheckpoint(os.path.join(tmp_path, "s.keras"))
    checkpoint.set_model(distiller)
    checkpoint.on_train_begin()
    checkpoint.on_epoch_begin(0)
    with pytest.raises(
        ValueError,
        match=r"monitors 'val_accuracy', which is not in.*\['accuracy', 'loss'\].*validation_data",
    ):
        checkpoint.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5})


def test_checkpoint_in_fit(pair, batch, tmp_path):
    x, y = batch
    distiller = keras_unikd.Distiller(*pair, logits_loss="kd", distribution_loss=None)
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    path = os.path.join(tmp_path, "student.keras")
    distiller.fit(
        x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0,
        callbacks=[StudentCheckpoint(path, save_best_only=False)],
    )
    np.testing.assert_allclose(
        keras.models.load_model(path).predict(x, verbose=0),
        distiller.predict(x, verbose=0),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "logs,error,match",
    [
        ({"loss": np.nan, "ce_loss": 1.0, "kd_loss": np.nan}, RuntimeError,
         r"^Epoch 2, batch 4: the loss term 'kd_loss' became non-finite first \(nan\); "
         r"training stopped"),
        ({"loss": np.inf, "ce_loss": np.inf, "kd_loss": np.nan}, RuntimeError,
         r"'ce_loss' became non-finite first \(inf\) \(also non-finite in this batch: kd_loss\)"),
        ({"loss": np.nan, "ce_loss": 1.0, "kd_loss": 2.0}, ValueError, r"labels outside \[0, 5\)"),
    ],
)
def test_guard_diagnoses_batch_logs(distiller, logs, error, match):
    guard = NonFiniteLossGuard(raise_error=True)
    guard.set_model(distiller)
    guard.on_epoch_begin(1)
    guard.on_train_batch_end(2, {"loss": 1.0, "ce_loss": 1.0, "kd_loss": 0.0})
    with pytest.raises(error, match=match):
        guard.on_train_batch_end(3, logs)


def test_guard_checks_validation_and_by_default_just_stops(distiller, capsys):
    guard = NonFiniteLossGuard()
    guard.set_model(distiller)
    guard.on_train_begin()
    logs = {"loss": 1.0, "ce_loss": 1.0, "kd_loss": 0.0, "val_loss": np.nan}
    distiller.stop_training = False
    guard.on_epoch_end(0, logs)
    assert distiller.stop_training
    assert (
        "End of epoch 1: val_loss is nan while the training losses and the student's weights "
        "are finite"
    ) in capsys.readouterr().out


def test_guard_names_a_diverged_last_step(distiller):
    kernel = distiller.student.get_layer("s_logits").kernel
    kernel.assign(np.full(kernel.shape, np.inf, "float32"))
    guard = NonFiniteLossGuard(raise_error=True)
    guard.set_model(distiller)
    guard.on_train_begin()
    with pytest.raises(RuntimeError, match="End of epoch 2: the student's weights are not finite"):
        guard.on_epoch_end(1, {"loss": 1.0, "ce_loss": 1.0, "kd_loss": 0.0, "val_loss": np.nan})
    guard.on_train_begin()
    with pytest.raises(RuntimeError, match="End of training: the student's weights are not finite"):
        guard.on_train_end({"loss": 1.0})


@pytest.mark.parametrize(
    "callback",
    [
        keras_unikd.callbacks.TrainingPlan(),
        keras_unikd.callbacks.EpochTimer(),
        NonFiniteLossGuard(raise_error=True),
        StudentCheckpoint(
            "runs/student.keras", monitor="val_loss", mode="min", save_best_only=False
        ),
    ],
    ids=lambda callback: type(callback).__name__,
)
def test_callbacks_are_registered_and_round_trip(callback):
    name = f"keras_unikd>{type(callback).__name__}"
    assert keras.saving.get_registered_object(name) is type(callback)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert type(clone) is type(callback) and clone.get_config() == callback.get_config()


def test_checkpoint_saves_a_model_without_a_student_itself(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    initial = model.get_weights()
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.arange(8) % 2
    path = str(tmp_path / "best_teacher.keras")
    model.fit(
        x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=[StudentCheckpoint(path)]
    )
    saved = keras.models.load_model(path).get_weights()
    for saved_weight, weight in zip(saved, model.get_weights()):
        np.testing.assert_array_equal(saved_weight, weight)  # the trained network
    assert not np.allclose(saved[0], initial[0])
    with open(path + ".json") as f:
        assert json.load(f)["epoch"] == 1
