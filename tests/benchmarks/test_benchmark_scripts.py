"""Smoke runs of the benchmark scripts in their --quick modes."""

import json
import os
import statistics
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason=(
        "the benchmark scripts choose their backends themselves; one smoke run (under the "
        "TensorFlow test pass) is enough"
    ),
)


def run_script(name, *args, cwd):
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
    import importlib.util

    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_accuracy_and_plots_quick(tmp_path):
    output = tmp_path / "results" / "accuracy.json"
    stdout = run_script(
        "accuracy.py", "--quick", "--methods", "student", "kd", "unikd", "--output", str(output),
        "--cache-dir", str(tmp_path / "teachers"), cwd=tmp_path,
    )
    results = json.loads(output.read_text())
    assert set(results["methods"]) == {"student", "kd", "unikd"}
    for entry in results["methods"].values():
        summary = entry["summary"]
        assert 0.0 <= summary["best_mean"] <= 100.0 and summary["best_std"] == 0.0
        assert summary["last_mean"] <= summary["best_mean"] and summary["seconds_per_epoch"] > 0
        assert len(entry["runs"]) == 1 and "val_accuracy" in entry["runs"][0]["history"]
    assert "feature_loss" in results["methods"]["unikd"]["runs"][0]["history"]
    assert results["quick"] and results["backend"] == "tensorflow"
    assert "| unikd |" in (tmp_path / "results" / "accuracy.md").read_text()
    assert "| unikd |" in stdout
    assert results["policy"] == "float32"

    # Mixed precision for the students: the teacher cached above is reused.
    bfloat16_output = tmp_path / "bfloat16" / "accuracy.json"
    run_script(
        "accuracy.py", "--quick", "--methods", "unikd", "--policy", "mixed_bfloat16",
        "--output", str(bfloat16_output), "--cache-dir", str(tmp_path / "teachers"), cwd=tmp_path,
    )
    results = json.loads(bfloat16_output.read_text())
    assert results["policy"] == "mixed_bfloat16"
    assert 0.0 <= results["methods"]["unikd"]["summary"]["best_mean"] <= 100.0
    student = keras.models.load_model(tmp_path / "bfloat16" / "accuracy_students" / "unikd.keras")
    assert student.layers[-1].compute_dtype == "bfloat16"

    run_script("plots.py", "--results", str(output), cwd=tmp_path)
    for name in ("training_curves.png", "softmax_gap_cdf.png", "correlation_gap.png"):
        assert (tmp_path / "results" / name).stat().st_size > 1000
    analysis = json.loads((tmp_path / "results" / "analysis.json").read_text())
    assert set(analysis["mean_softmax_gap"]) == {"student", "kd", "unikd"}
    assert set(analysis["mean_correlation_gap"]) == {"kd", "unikd"}


def test_speed_quick(tmp_path):
    output = tmp_path / "speed.json"
    stdout = run_script("speed.py", "--quick", "--output", str(output), cwd=tmp_path)
    results = json.loads(output.read_text())
    timing = results["timing"]["tensorflow"]["fashion_mnist"]
    assert timing["batch_size"] == 16
    assert set(timing["step_seconds"]) == {"student", "kd", "unikd", "keras_kd"}
    assert all(seconds > 0 for seconds in timing["step_seconds"].values())
    rounds = timing["rounds"]
    within_rounds = [u / k for u, k in zip(rounds["unikd"], rounds["kd"])]
    assert timing["ratio_rounds"]["unikd/kd"] == pytest.approx(within_rounds)
    assert timing["ratios"]["unikd/kd"] == pytest.approx(statistics.median(within_rounds))
    assert set(timing["ratios"]) == {"unikd/kd", "kd/keras_kd", "unikd/student"}
    assert set(timing["student_compute_dtype"].values()) == {"float32"}
    bfloat16 = results["timing"]["tensorflow-bf16"]["fashion_mnist"]
    assert set(bfloat16["student_compute_dtype"].values()) == {"bfloat16"}
    assert set(bfloat16["step_seconds"]) == set(timing["step_seconds"])
    torch = results["timing"]["torch"]["fashion_mnist"]
    assert set(torch["step_seconds"]) == set(timing["step_seconds"])
    assert all(seconds > 0 for seconds in torch["step_seconds"].values())
    assert "| torch |" in stdout
    memory = results["memory"]["fashion_mnist"]
    assert all(
        entry["peak_rss_mb"] >= entry["models_built_rss_mb"] > 0 for entry in memory.values()
    )
    assert "unikd/kd" in stdout


def test_compare_versions_quick(tmp_path):
    """Both trees are this one here: each worker imports keras_unikd from its PYTHONPATH."""
    output = tmp_path / "versions.json"
    stdout = run_script(
        "compare_versions.py", "--quick", "--before", ROOT, "--output", str(output), cwd=tmp_path
    )
    results = json.loads(output.read_text())
    entry = results["engines"]["tensorflow"]
    assert entry["keras_unikd"] == {
        "before": os.path.join(ROOT, "keras_unikd"), "after": os.path.join(ROOT, "keras_unikd")
    }
    rounds = entry["rounds"]
    assert all(len(rounds[tree][m]) == 2 for tree in rounds for m in ("student", "kd"))
    within_rounds = [a / b for a, b in zip(rounds["after"]["kd"], rounds["before"]["kd"])]
    assert entry["ratio_rounds"]["kd"] == pytest.approx(within_rounds)
    assert entry["ratios"]["kd"] == pytest.approx(statistics.median(within_rounds))
    assert len(entry["load_1min"]) == 3
    assert "| tensorflow | kd |" in stdout


def test_benchmark_methods_come_from_the_presets():
    from keras_unikd import presets

    speed = load_script("speed")
    assert speed.METHODS == ("student", "kd", "dkd", "mlkd", "unikd", "unimlkd", "keras_kd")
    assert set(speed.METHODS) - set(presets.METHODS) == {"keras_kd"}
    accuracy = load_script("accuracy")
    methods = accuracy.parse_args([]).methods
    assert set(methods) == set(presets.METHODS) | set(presets.VARIANTS)


def test_accuracy_cifar100_mode_on_mock_data(tmp_path):
    """The paper-preset mode, on tensorflow-datasets mock data, in-process."""
    import tensorflow_datasets as tfds

    from keras_unikd import presets

    accuracy = load_script("accuracy")
    preset = "cifar100_resnet56_resnet20"
    teacher, _ = presets.build_models(preset)
    teacher_path = str(tmp_path / "teacher.keras")
    teacher.save(teacher_path)
    output = tmp_path / "cifar.json"
    with tfds.testing.mock_data(num_examples=8):
        accuracy.main([
            "--dataset", "cifar100", "--preset", preset, "--teacher", teacher_path,
            "--methods", "fitnet+kd", "fdp-only", "--seeds", "1", "--epochs", "1",
            "--take", "8", "--output", str(output),
        ])
    results = json.loads(output.read_text())
    assert results["preset"] == preset and set(results["methods"]) == {"fitnet+kd", "fdp-only"}
    fitnet_kd = results["methods"]["fitnet+kd"]["runs"][0]["history"]
    assert {"hint_loss", "kd_loss", "ce_loss"} <= set(fitnet_kd)
    assert "feature_loss" in results["methods"]["fdp-only"]["runs"][0]["history"]
