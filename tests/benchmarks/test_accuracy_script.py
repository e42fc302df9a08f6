"""benchmarks/accuracy.py and benchmarks/plots.py: smoke runs and the default protocol."""

import json
import statistics

import keras
import pytest

from benchmark_scripts import load_script
from benchmark_scripts import run_script
from benchmark_scripts import tensorflow_pass_only

pytestmark = tensorflow_pass_only


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

    assert results["teacher_outputs"] == "online"
    assert {run["teacher_outputs"] for e in results["methods"].values() for run in e["runs"]} == {
        "online"
    }

    # Mixed precision for the students, the teacher's outputs from a cache
    # (float32); the teacher trained above is reused.
    bfloat16_output = tmp_path / "bfloat16" / "accuracy.json"
    stdout = run_script(
        "accuracy.py", "--quick", "--methods", "unikd", "--policy", "mixed_bfloat16",
        "--teacher-cache", str(tmp_path / "outputs"),
        "--output", str(bfloat16_output), "--cache-dir", quick_teachers, cwd=tmp_path,
    )
    assert "Using the cached teacher" in stdout
    results = json.loads(bfloat16_output.read_text())
    assert results["policy"] == "mixed_bfloat16" and results["comparisons"] == {}
    (run,) = results["methods"]["unikd"]["runs"]
    assert "feature_loss" in run["history"] and run["teacher_outputs"] == "cached"
    assert 0.0 <= results["methods"]["unikd"]["summary"]["last_mean"] <= 100.0
    (build,) = results["teacher_cache_builds"]
    # 512 examples x 1 epoch x 2 views x (10 logits + 32 pooled channels) in float32.
    assert build["seed"] == 0 and build["bytes"] > 512 * 2 * 42 * 4 and build["seconds"] > 0
    assert (tmp_path / "outputs" / "seed0" / "manifest.json").exists()
    assert "per-seed caches" in (tmp_path / "bfloat16" / "accuracy.md").read_text()
    student = keras.models.load_model(tmp_path / "bfloat16" / "accuracy_students" / "unikd.keras")
    assert student.layers[-1].compute_dtype == "bfloat16"

    run_script("plots.py", "--results", str(output), cwd=tmp_path)
    for name in (
        "training_curves.png", "softmax_gap_cdf.png", "correlation_gap.png",
        "paired_differences.png", "accuracy_vs_cost.png",
    ):
        assert (tmp_path / "results" / name).stat().st_size > 1000
    analysis = json.loads((tmp_path / "results" / "analysis.json").read_text())
    assert set(analysis["mean_softmax_gap"]) == {"student", "kd"}
    assert set(analysis["mean_correlation_gap"]) == {"kd"}


# The paper's baselines in the method table, each compared with the student, KD and UniKD.
BASELINES = {
    "fitnet", "at", "dist", "sp", "pkt", "rkd", "nst", "kdsvd", "vid", "ofd", "crd", "reviewkd",
}  # fmt: skip


def test_accuracy_default_protocol():
    accuracy = load_script("accuracy")
    args = accuracy.parse_args([])
    assert args.seeds == 5 and args.ablation_seeds == 3
    assert set(accuracy.MAIN_METHODS) == {
        "student", "kd", "dkd", "mlkd", "unikd", "unimlkd",
        "kd+ls", "dkd+ls", "mlkd+ls", "unikd+ls", "unimlkd+ls",
    }
    assert set(accuracy.ABLATIONS) == {
        "fitnet+kd", "unikd-gaussian", "fdp-only", "aff+fdp-no-logits", "at+kd", *BASELINES,
    }
    assert set(accuracy.BASELINES) == BASELINES
    assert args.methods == list(accuracy.MAIN_METHODS + accuracy.ABLATIONS)
    pairs = set(accuracy.PAIRS)
    assert {("unikd", "dkd"), ("unimlkd", "mlkd"), ("kd+ls", "kd"), ("unimlkd+ls", "unimlkd")} <= (
        pairs
    )
    others = ("student", "kd", "unikd")
    assert {(m, other) for m in accuracy.BASELINES for other in others} <= pairs
    quick = accuracy.parse_args(["--quick"])
    assert (quick.seeds, quick.ablation_seeds, quick.student_epochs) == (1, 1, 1)
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--methods", "no-such-method"])


def test_resume_keeps_the_finished_runs_and_does_the_rest(tmp_path):
    accuracy = load_script("accuracy")
    output = tmp_path / "accuracy.json"
    args = accuracy.parse_args(
        ["--methods", "student", "fitnet", "--seeds", "2", "--resume", "--output", str(output)]
    )
    settings = {"dataset": "fashion_mnist", "recipe": {"subset": 8000}, "policy": "float32"}
    fresh = dict(settings, methods={}, run_seconds=0.0, run_cpu_seconds=0.0)
    # No file yet: every run is pending, seeds outermost (fitnet, an ablation, has 3).
    assert accuracy.resumed(fresh, args) is fresh
    assert list(accuracy.pending_runs(args, fresh)) == [
        (0, "student"), (0, "fitnet"), (1, "student"), (1, "fitnet"), (2, "fitnet"),
    ]
    run = {"seed": 0, "seconds": 2.0, "cpu_seconds": 3.0}
    done = dict(settings, methods={"student": {"runs": [run]}, "kd": {"runs": [run]}})
    output.write_text(json.dumps(done))
    resumed = accuracy.resumed(fresh, args)
    assert resumed["methods"] == {"student": {"runs": [run]}}  # kd is not asked for
    assert (resumed["run_seconds"], resumed["run_cpu_seconds"]) == (2.0, 3.0)
    assert list(accuracy.pending_runs(args, resumed))[:2] == [(0, "fitnet"), (1, "student")]
    with pytest.raises(ValueError, match=r"other settings \(\['recipe'\]\)"):
        accuracy.resumed(dict(fresh, recipe={"subset": 512}), args)


def test_benchmark_methods_come_from_the_presets():
    from keras_unikd import presets

    accuracy = load_script("accuracy")
    methods = accuracy.parse_args([]).methods
    assert set(methods) == set(presets.METHODS) | set(presets.VARIANTS)


def test_accuracy_cifar100_mode_on_mock_data(tmp_path):
    """The paper-preset mode, on tensorflow-datasets mock data, in-process."""
    import tensorflow_datasets as tfds

    from keras_unikd import presets

    accuracy = load_script("accuracy")
    preset = "cifar100_vgg13_vgg8"  # the fewest layers: the least to trace
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


def test_merge_joins_runs_split_by_method(tmp_path):
    accuracy = load_script("accuracy")
    settings = dict(
        dataset="fashion_mnist", recipe={"subset": 8000, "student_epochs": 7, "student_width": 8},
        teacher={"last_accuracy": 0.9, "epochs": 10}, policy="float32", backend="tensorflow",
        date="2026-12-01", machine="x86_64", keras_version="3", test_examples=100,
        student_parameters=6386,
    )

    def run(seed, accuracy):
        return dict(
            seed=seed, best_accuracy=accuracy, last_accuracy=accuracy, seconds_per_epoch=1.0,
        )

    parts = {
        "a.json": dict(
            settings, complete=True, run_seconds=10.0, run_cpu_seconds=20.0,
            seeds={"kd": 2, "student": 2},
            methods={
                "kd": {"runs": [run(0, 0.80), run(1, 0.82)]},
                "student": {"runs": [run(0, 0.75), run(1, 0.74)]},
            },
        ),
        "b.json": dict(
            settings, complete=False, run_seconds=5.0, run_cpu_seconds=6.0,
            seeds={"mlkd+ls": 2}, methods={"mlkd+ls": {"runs": [run(0, 0.70)]}},
        ),
    }
    for name, part in parts.items():
        (tmp_path / name).write_text(json.dumps(part))
        if name == "b.json":
            (tmp_path / "b_students").mkdir()
            (tmp_path / "b_students" / "mlkd+ls.keras").write_text("student")
    paths = [str(tmp_path / name) for name in parts]
    output = tmp_path / "merged.json"
    accuracy.main(["--merge", *paths, "--output", str(output)])
    merged = json.loads(output.read_text())
    assert list(merged["methods"]) == ["student", "kd", "mlkd+ls"]  # the benchmark's order
    assert merged["seeds"] == {"kd": 2, "student": 2, "mlkd+ls": 2}
    assert not merged["complete"]  # b.json is not
    assert (merged["run_seconds"], merged["run_cpu_seconds"]) == (15.0, 26.0)
    assert merged["methods"]["kd"]["summary"]["last_mean"] == pytest.approx(81.0)
    assert merged["comparisons"]["kd vs student"]["differences"] == pytest.approx([5.0, 8.0])
    assert (tmp_path / "merged_students" / "mlkd+ls.keras").read_text() == "student"
    assert "| mlkd+ls | 1 |" in (tmp_path / "merged.md").read_text()

    with pytest.raises(ValueError, match=r"'kd' is in both .*a\.json and .*a\.json"):
        accuracy.merged([paths[0], paths[0]], str(output))
    (tmp_path / "c.json").write_text(json.dumps(dict(parts["b.json"], recipe={"subset": 512})))
    with pytest.raises(ValueError, match=r"other settings \(\['recipe'\]\)"):
        accuracy.merged([paths[0], str(tmp_path / "c.json")], str(output))
