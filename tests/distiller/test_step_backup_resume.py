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


def kill(directory, env, job, step):
    """Runs the worker once; it SIGKILLs itself after step `step` of `job`."""
    log = directory / f"killed-{job}-{step}.log"
    process = start_worker("step_backup_run", directory, "--kill", job, step, log=log, env=env)
    process.wait(timeout=300)
    assert process.returncode == -9, log.read_text()


def kill_mid_write(directory, env, job, step):
    """Runs the worker once; it is SIGKILLed in the middle of writing `job`'s backup of `step`."""
    name = backup_name(step // STEPS_PER_EPOCH, step % STEPS_PER_EPOCH)
    log = directory / f"paused-{job}-{step}.log"
    args = ["--pause-write", job, name]
    process = start_worker("step_backup_run", directory, *args, log=log, env=env)
    kill_when_marked(process, directory / "paused")
    backups = os.listdir(directory / job / "backup")
    assert any(name.startswith(".tmp-") for name in backups), backups  # the half-written one
    assert name not in backups


def test_runs_killed_at_random_steps_end_bitwise_equal(tmp_path, env):
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    # Every job is killed: the keyed one at a random step of its first two
    # epochs; the cached one after the first step of its last epoch, before
    # the next backup (it resumes at an epoch boundary), then in the middle of
    # writing a later backup; the tf.data one (TensorFlow) at a random step.
    boundary = 2 * STEPS_PER_EPOCH
    later_backup = int(rng.choice([s for s in backup_steps() if boundary < s < STEPS]))
    events = [
        (kill, "keyed", int(rng.integers(1, boundary))),
        (kill, "cache", boundary + 1),
        (kill_mid_write, "cache", later_backup),
    ]
    if keras.backend.backend() == "tensorflow":
        events.append((kill, "tfdata", int(rng.integers(1, STEPS - 1))))
    run_worker("step_backup_run", tmp_path / "reference", log=tmp_path / "reference.log", env=env)
    (tmp_path / "resumed").mkdir()
    for event, job, step in events:
        event(tmp_path / "resumed", env, job, step)
    run_worker("step_backup_run", tmp_path / "resumed", log=tmp_path / "final.log", env=env)
    kills = [(event.__name__, job, step) for event, job, step in events]

    expected, resumed = results(tmp_path / "reference"), results(tmp_path / "resumed")
    assert sorted(resumed) == sorted(expected)
    for job, arrays in expected.items():
        assert sorted(resumed[job]) == sorted(arrays)
        for key, value in arrays.items():
            np.testing.assert_array_equal(
                resumed[job][key], value, err_msg=f"{job} {key} ({kills})"
            )
        assert not (tmp_path / "resumed" / job / "backup").exists()  # deleted once finished
        # The best-student checkpoint, kept across the kills, is the uninterrupted run's.
        saved = keras.models.load_model(tmp_path / "resumed" / job / "best.keras")
        reference = keras.models.load_model(tmp_path / "reference" / job / "best.keras")
        for a, b in zip(saved.weights, reference.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=job)
