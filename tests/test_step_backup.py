"""`StepBackup` in one process: failing disks, damaged backups, data it cannot resume.

Killed runs and their bitwise-equal resumes are in
`distiller/test_step_backup_resume.py` (subprocesses).
"""

import errno
import json
import os

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import make_network
from keras_unikd import atomic_files
from keras_unikd import terms
from keras_unikd.callbacks import StepBackup


def distiller():
    """A Distiller of fresh tiny networks (seeded: the same weights each time)."""
    keras.utils.set_random_seed(0)
    teacher, student = make_network(8, "t"), make_network(4, "s")
    model = keras_unikd.Distiller(teacher, student, terms=[terms.CrossEntropy(), terms.KD()])
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return model


def arrays(batch):
    x, y = batch
    return dict(x=x, y=y, batch_size=4, shuffle=False)  # 4 steps per epoch


def fit(model, backup, batch, epochs=1, **kwargs):
    return model.fit(**arrays(batch), epochs=epochs, callbacks=[backup], verbose=0, **kwargs)


def backups(directory):
    return sorted(os.listdir(directory))


def failing_on_call(number, error):
    """A stand-in for `atomic_files.fsync_tree` that raises `error` on call `number`."""
    calls = []
    flush = atomic_files.fsync_tree

    def flush_or_fail(directory):
        calls.append(directory)
        if len(calls) == number:
            raise error
        flush(directory)

    return flush_or_fail


def test_a_full_disk_stops_training_naming_the_path_and_keeps_the_last_backup(
    batch, tmp_path, monkeypatch
):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(atomic_files, "fsync_tree", failing_on_call(2, full))
    model = distiller()
    with pytest.raises(OSError, match=r"could not write its backup to '.*epoch-0+-batch-0+2'") as e:
        fit(model, StepBackup(tmp_path, save_every_steps=2), batch)
    first_line = str(e.value).splitlines()[0]
    assert "no space is left on the device (ENOSPC)" in first_line
    assert "epoch-000000-batch-00000002' is kept" in first_line
    assert backups(tmp_path) == ["epoch-000000-batch-00000002"]  # no temporary left behind
    assert StepBackup(tmp_path).latest().batch == 2


def test_a_read_only_directory_stops_training_before_the_first_step(batch, tmp_path, monkeypatch):
    # The tests run as root, for whom permissions do not stop a write: the
    # file system's answer to a write in a read-only directory is simulated.
    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(os, "makedirs", read_only)
    model = distiller()
    with pytest.raises(OSError, match=r"to '.*missing': the file system is read-only \(EROFS\)"):
        fit(model, StepBackup(tmp_path / "missing", save_every_steps=2), batch)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0


def test_a_directory_that_vanishes_stops_training_naming_it(batch, tmp_path):
    directory = tmp_path / "backup"

    class Unmount(keras.callbacks.Callback):
        def on_train_batch_end(self, index, logs=None):
            if index == 2:
                atomic_files.remove_quietly(directory)

    model = distiller()
    with pytest.raises(OSError, match="the directory does not exist") as e:
        model.fit(
            **arrays(batch),
            epochs=1,
            callbacks=[Unmount(), StepBackup(directory, save_every_steps=2)],
            verbose=0,
        )
    assert str(directory) in str(e.value).splitlines()[0]


def test_a_damaged_latest_backup_falls_back_to_the_one_before(batch, tmp_path):
    backup = StepBackup(tmp_path, save_every_steps=1, delete_on_finish=False)
    fit(distiller(), backup, batch)
    assert backups(tmp_path) == ["epoch-000000-batch-00000003", "epoch-000001-batch-00000000"]
    with open(tmp_path / "epoch-000001-batch-00000000" / "state.json", "w") as file:
        file.write('{"epoch": 1, "ba')  # as a failing disk might leave it
    with pytest.warns(UserWarning, match="epoch-000001-batch-00000000' cannot be read"):
        position = StepBackup(tmp_path).latest()
    assert (position.epoch, position.batch) == (0, 3)


def test_a_finished_run_deletes_its_backups_and_a_kept_one_returns_its_history(batch, tmp_path):
    history = fit(distiller(), StepBackup(tmp_path / "a", save_every_steps=2), batch, 2)
    assert not (tmp_path / "a").exists()
    kept = StepBackup(tmp_path / "b", save_every_steps=2, delete_on_finish=False)
    first = fit(distiller(), kept, batch, 2)
    assert first.history == history.history and first.epoch == [0, 1]
    with open(tmp_path / "b" / "epoch-000002-batch-00000000" / "state.json") as file:
        assert json.load(file)["epoch"] == 2
    # Run again: nothing left to train; fit returns the backed-up history.
    model = distiller()
    again = fit(model, kept, batch, 2)
    assert again.history == history.history and again.epoch == [0, 1]
    for a, b in zip(model.student.weights, first.model.student.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the final state


def test_data_that_cannot_restart_mid_epoch_is_backed_up_at_epoch_ends(batch, tmp_path):
    x, y = batch

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return x[4 * index : 4 * index + 4], y[4 * index : 4 * index + 4]

    backup = StepBackup(tmp_path, save_every_steps=1, delete_on_finish=False)
    with pytest.warns(UserWarning, match="epoch ends only.*Batches data cannot be started"):
        distiller().fit(Batches(), epochs=1, callbacks=[backup], verbose=0)
    assert backups(tmp_path) == ["epoch-000001-batch-00000000"]  # the epoch end only


def test_shuffled_arrays_resume_at_epoch_ends_only_and_say_why(batch, tmp_path):
    x, y = batch
    backup = StepBackup(tmp_path, save_every_steps=1)
    with pytest.warns(UserWarning, match="fit shuffles in-memory arrays"):
        distiller().fit(x, y, batch_size=4, epochs=1, callbacks=[backup], verbose=0)


def test_a_backup_of_another_model_is_refused(batch, tmp_path):
    fit(distiller(), StepBackup(tmp_path, save_every_steps=2, delete_on_finish=False), batch)
    teacher = make_network(8, "t")
    other = keras_unikd.Distiller(teacher, keras.models.clone_model(teacher), terms=[terms.KD()])
    other.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="holds the state of another model or optimizer"):
        fit(other, StepBackup(tmp_path), batch, 2)


def test_step_backup_needs_a_distiller(tmp_path, batch):
    student = keras.Sequential(
        [keras.Input((12, 12, 1)), keras.layers.Flatten(), keras.layers.Dense(5)]
    )
    student.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="StepBackup resumes runs through keras_unikd.Distiller"):
        student.fit(*batch, epochs=1, callbacks=[StepBackup(tmp_path)], verbose=0)


def test_step_backup_config_round_trip_and_argument_errors(tmp_path):
    backup = StepBackup(tmp_path, save_every_steps=50, save_every_minutes=None, keep=3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backup))
    assert restored.get_config() == backup.get_config()
    with pytest.raises(ValueError, match="save_every_steps"):
        StepBackup(tmp_path, save_every_steps=0)
    with pytest.raises(ValueError, match="keep"):
        StepBackup(tmp_path, keep=0)
    assert np.isclose(StepBackup(tmp_path).save_every_minutes, 10.0)


def test_a_resume_with_another_batch_size_is_refused(batch, tmp_path):
    class Preempted(Exception):
        pass

    class Preempt(keras.callbacks.Callback):
        def on_train_batch_end(self, index, logs=None):
            if index == 1:
                raise Preempted

    backup = StepBackup(tmp_path, save_every_steps=1)
    with pytest.raises(Preempted):
        distiller().fit(**arrays(batch), epochs=1, callbacks=[backup, Preempt()], verbose=0)
    assert StepBackup(tmp_path).latest().batch == 2
    x, y = batch
    with pytest.raises(ValueError, match="taken with 4 steps per epoch, and this run's data has 2"):
        distiller().fit(x, y, batch_size=8, shuffle=False, callbacks=[backup], verbose=0)
