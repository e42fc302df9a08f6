"""Determinism of seeded runs (resuming killed runs: test_step_backup_resume.py).

`workers/demo_run.py` trains a small version of the demo configuration
(Fashion-MNIST teacher and student, sampled UniKD, warm-up) with
`keras.utils.set_random_seed` and, under TensorFlow, op determinism. On CPU
both backends are bitwise deterministic here, so the comparisons are exact.
"""

import numpy as np

from workers.launch import run_worker
from workers.launch import student_weights
from workers.launch import worker_env


def test_two_seeded_runs_give_identical_students(tmp_path):
    env = worker_env(cache_dir=tmp_path / "jax-cache")
    run_worker("demo_run", tmp_path / "results.npz", "--runs", 2, log=tmp_path / "log", env=env)
    results = dict(np.load(tmp_path / "results.npz"))
    for a, b in zip(student_weights(results, "run0"), student_weights(results, "run1")):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(results["run0/predictions"], results["run1/predictions"])
