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


def test_accuracy_and_plots_quick(tmp_path, quick_teachers):
    output = tmp_path / "results" / "accuracy.json"
    stdout = run_script(
        "accuracy.py", "--quick", "--seeds", "2", "--methods", "student", "kd",
        "--output", str(output), "--cache-dir", quick_teachers, cwd=tmp_path,
    )
    results = json.loads(output.read_text())
    assert results["complete"] and results["quick"] and results["backend"] == "tensorflow"
    assert results["seeds"] == {"student": 2, "kd": 2} and results["policy"] == "float32"
    assert results["recipe"]["student_epochs"] == 1 and results["teacher"]["epochs"] == 1
    accuracy = {}
    for method, entry in results["methods"].items():
        runs = entry["runs"]
        assert [run["seed"] for run in runs] == [0, 1] and {run["views"] for run in runs} == {1}
        accuracy[method] = [100 * run["last_accuracy"] for run in runs]
        summary = entry["summary"]
        assert summary["seeds"] == 2
        assert summary["last_mean"] == pytest.approx(statistics.mean(accuracy[method]))
        assert summary["last_std"] == pytest.approx(statistics.stdev(accuracy[method]))
        assert summary["last_mean"] <= summary["best_mean"] and summary["seconds_per_epoch"] > 0
        assert runs[0]["history"]["val_accuracy"] == [runs[0]["last_accuracy"]]
    assert "kd_loss" in results["methods"]["kd"]["runs"][0]["history"]
    assert list(results["comparisons"]) == ["kd vs student"]  # the only pair that ran
    paired = results["comparisons"]["kd vs student"]
    assert paired["differences"] == pytest.approx(
        [k - s for k, s in zip(accuracy["kd"], accuracy["student"])]
    )
    assert paired["n"] == 2 and paired["ci_low"] <= paired["mean"] <= paired["ci_high"]
    markdown = (tmp_path / "results" / "accuracy.md").read_text()
    for row in ("| kd | 2 |", "| student | 2 |", "| kd vs student | 2 |"):
        assert row in markdown and row in stdout
    assert (tmp_path / "results" / "accuracy_students" / "kd.keras").exists()

    # Mixed precision for the students: the teacher cached above is reused.
    bfloat16_output = tmp_path / "bfloat16" / "accuracy.json"
    stdout = run_script(
        "accuracy.py", "--quick", "--methods", "unikd", "--policy", "mixed_bfloat16",
        "--output", str(bfloat16_output), "--cache-dir", quick_teachers, cwd=tmp_path,
    )
    assert "Using the cached teacher" in stdout
    results = json.loads(bfloat16_output.read_text())
    assert results["policy"] == "mixed_bfloat16" and results["comparisons"] == {}
    assert "feature_loss" in results["methods"]["unikd"]["runs"][0]["history"]
    assert 0.0 <= results["methods"]["unikd"]["summary"]["last_mean"] <= 100.0
    student = keras.models.load_model(tmp_path / "bfloat16" / "accuracy_students" / "unikd.keras")
    assert student.layers[-1].compute_dtype == "bfloat16"

    run_script("plots.py", "--results", str(output), cwd=tmp_path)
    for name in (
        "training_curves.png", "softmax_gap_cdf.png", "correlation_gap.png",
        "paired_differences.png",
    ):
        assert (tmp_path / "results" / name).stat().st_size > 1000
    analysis = json.loads((tmp_path / "results" / "analysis.json").read_text())
    assert set(analysis["mean_softmax_gap"]) == {"student", "kd"}
    assert set(analysis["mean_correlation_gap"]) == {"kd"}


def test_accuracy_default_protocol():
    accuracy = load_script("accuracy")
    args = accuracy.parse_args([])
    assert args.seeds == 5 and args.ablation_seeds == 3
    assert set(accuracy.MAIN_METHODS) == {
        "student", "kd", "dkd", "mlkd", "unikd", "unimlkd",
        "kd+ls", "dkd+ls", "mlkd+ls", "unikd+ls", "unimlkd+ls",
    }
    assert set(accuracy.ABLATIONS) == {
        "fitnet", "fitnet+kd", "unikd-gaussian", "fdp-only", "aff+fdp-no-logits",
    }
    assert args.methods == list(accuracy.MAIN_METHODS + accuracy.ABLATIONS)
    pairs = set(accuracy.PAIRS)
    assert {("unikd", "dkd"), ("unimlkd", "mlkd"), ("kd+ls", "kd"), ("unimlkd+ls", "unimlkd")} <= (
        pairs
    )
    quick = accuracy.parse_args(["--quick"])
    assert (quick.seeds, quick.ablation_seeds, quick.student_epochs) == (1, 1, 1)
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--methods", "crd"])


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
