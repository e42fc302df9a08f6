"""`StepBackup`: runs SIGKILLed at random steps resume to the uninterrupted result.

`workers/step_backup_run.py` trains the same seeded distillations with the
keyed pipeline, a teacher-output cache and (TensorFlow) a shuffled
`tf.data.Dataset`, backed up every 2 steps. The reference trains them
uninterrupted; the chain of processes below is killed several times, at
steps partly drawn at random (printed on failure), once in the middle of
writing a backup, and run again until it finishes. Students, optimizer
states and histories must be bitwise equal (CPU kernels are deterministic
here; TensorFlow runs with op determinism).
"""

import os

import keras
import numpy as np
import pytest

from keras_unikd.backup import backup_name
from workers.launch import kill_when_marked
from workers.launch import run_worker
from workers.launch import start_worker
from workers.launch import worker_env
from workers.step_backup_run import BATCH
from workers.step_backup_run import EPOCHS
from workers.step_backup_run import EXAMPLES

STEPS_PER_EPOCH = -(-EXAMPLES // BATCH)
STEPS = EPOCHS * STEPS_PER_EPOCH


def backup_steps(every=2):
    """The steps after which the worker's runs back up (every 2 steps, and at epoch ends)."""
    steps, since = [], 0
    for epoch in range(EPOCHS):
        for batch in range(1, STEPS_PER_EPOCH):
            since += 1
            if since >= every:
                steps.append(epoch * STEPS_PER_EPOCH + batch)
                since = 0
        steps.append((epoch + 1) * STEPS_PER_EPOCH)
        since = 0
    return steps


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return worker_env(cache_dir=tmp_path_factory.getbasetemp() / "jax-cache")


def results(directory):
    jobs = sorted(name for name in os.listdir(directory) if os.path.isdir(directory / name))
    return {
        job: dict(np.load(directory / job / "result.npz"))
        for job in jobs
        if (directory / job / "result.npz").exists()
    }


def kill_chain(directory, env, kills, pause):
    """Runs the worker until it finishes: killed at each of `kills`, paused mid-write at `pause`."""
    directory.mkdir()
    for step in kills:
        log = directory / f"killed-{step}.log"
        process = start_worker(
            "step_backup_run", directory, "--kill-at-step", step, log=log, env=env
        )
        process.wait(timeout=300)
        assert process.returncode == -9, log.read_text()
    name = backup_name(pause // STEPS_PER_EPOCH, pause % STEPS_PER_EPOCH)
    process = start_worker(
        "step_backup_run", directory, "--pause-write-at", name, log=directory / "p.log", env=env
    )
    kill_when_marked(process, directory / "paused")
    backups = os.listdir(directory / "keyed" / "backup")
    assert any(name.startswith(".tmp-") for name in backups), backups  # the half-written one
    assert name not in backups
    run_worker("step_backup_run", directory, log=directory / "final.log", env=env)


def test_runs_killed_at_random_steps_end_bitwise_equal(tmp_path, env):
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    # A kill in the first two epochs; then one after the first step of the last
    # epoch, before its next backup: that run resumes at an epoch boundary.
    kills = [int(rng.integers(1, 2 * STEPS_PER_EPOCH)), 2 * STEPS_PER_EPOCH + 1]
    # A backup the last resumed run writes (not the final one, which is deleted).
    pause = int(rng.choice([step for step in backup_steps() if kills[-1] < step < STEPS]))
    run_worker("step_backup_run", tmp_path / "reference", log=tmp_path / "reference.log", env=env)
    kill_chain(tmp_path / "resumed", env, kills, pause)

    expected, resumed = results(tmp_path / "reference"), results(tmp_path / "resumed")
    assert sorted(resumed) == sorted(expected)
    for job, arrays in expected.items():
        assert sorted(resumed[job]) == sorted(arrays)
        for key, value in arrays.items():
            np.testing.assert_array_equal(
                resumed[job][key], value, err_msg=f"{job} {key} (kills {kills}, pause {pause})"
            )
        assert not (tmp_path / "resumed" / job / "backup").exists()  # deleted once finished
        # The best-student checkpoint, kept across the kills, is the uninterrupted run's.
        saved = keras.models.load_model(tmp_path / "resumed" / job / "best.keras")
        reference = keras.models.load_model(tmp_path / "reference" / job / "best.keras")
        for a, b in zip(saved.weights, reference.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=job)
