"""Running and importing the scripts of benchmarks/ from their tests."""

import importlib.util
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The scripts choose their backends themselves: one smoke run, under the
# TensorFlow test pass, is enough.
tensorflow_pass_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason=(
        "the benchmark scripts choose their backends themselves; one smoke run (under the "
        "TensorFlow test pass) is enough"
    ),
)


def run_script(name, *args, cwd):
    """Runs `benchmarks/<name>` in a TensorFlow process; returns its stdout."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


def load_script(name):
    """`benchmarks/<name>.py` imported as a module."""
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
