"""Determinism of seeded runs, and resuming a run killed with SIGKILL.

`workers/demo_run.py` trains a small version of the demo configuration
(Fashion-MNIST teacher and student, sampled UniKD, warm-up) with
`keras.utils.set_random_seed` and, under TensorFlow, op determinism. On CPU
both backends are bitwise deterministic here, so the comparisons are exact.
"""

import os
import signal
import time

import keras
import numpy as np
import pytest

from workers.launch import run_worker
from workers.launch import start_worker
from workers.launch import student_weights
from workers.launch import wait_for
from workers.launch import worker_env


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return worker_env(cache_dir=tmp_path_factory.getbasetemp() / "jax-cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
    """Two uninterrupted runs in one process, and the first's best student."""
    directory = tmp_path_factory.mktemp("reference")
    run_worker(
        "demo_run",
        directory / "results.npz",
        "--runs",
        2,
        "--checkpoint",
        directory / "best_student.keras",
        log=directory / "log",
        env=env,
    )
    return dict(np.load(directory / "results.npz")), directory / "best_student.keras"


def test_two_seeded_runs_give_identical_students(reference):
    results, _ = reference
    for a, b in zip(student_weights(results, "run0"), student_weights(results, "run1")):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(results["run0/predictions"], results["run1/predictions"])


def kill_when_marked(process, marker, timeout=300):
    """SIGKILLs `process` once it has written `marker`."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(marker):
        if process.poll() is not None:
            wait_for([process])  # raises with the worker's output
            pytest.fail("the worker finished without reaching the crash point")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the worker did not reach the crash point in time")
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(reference, env, tmp_path):
    expected, expected_checkpoint = reference
    backup_dir = tmp_path / "backup"
    checkpoint = tmp_path / "best_student.keras"
    common = ["--backup-dir", backup_dir, "--checkpoint", checkpoint]

    # Killed after batch 2 of epoch 2: the backup holds the state at the end
    # of epoch 1 (weights, optimizer, epoch counter, noise seed states).
    crashing = start_worker(
        "demo_run",
        tmp_path / "unused.npz",
        *common,
        "--crash-at",
        2,
        2,
        tmp_path / "marker",
        log=tmp_path / "crashed.log",
        env=env,
    )
    kill_when_marked(crashing, tmp_path / "marker")
    assert (backup_dir / "latest.weights.h5").exists()
    assert not (tmp_path / "unused.npz").exists()

    run_worker("demo_run", tmp_path / "resumed.npz", *common, log=tmp_path / "resumed.log", env=env)
    resumed = dict(np.load(tmp_path / "resumed.npz"))

    np.testing.assert_array_equal(resumed["run0/epochs_run"], [1, 2])  # epochs 2 and 3
    for key in ("training_step", "iterations", "evaluation", "predictions"):
        np.testing.assert_array_equal(resumed[f"run0/{key}"], expected[f"run0/{key}"], err_msg=key)
    for a, b in zip(student_weights(resumed, "run0"), student_weights(expected, "run0")):
        np.testing.assert_array_equal(a, b)
    assert not backup_dir.exists()  # removed by BackupAndRestore once training completed

    # The best-student checkpoint, kept across the crash, is the uninterrupted run's.
    saved = keras.models.load_model(checkpoint)
    reference_saved = keras.models.load_model(expected_checkpoint)
    for a, b in zip(saved.weights, reference_saved.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # No temporary checkpoint file was left behind by the kill.
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []
