"""The sweep of UniKD's knobs and the second student size (benchmarks/sweep.py)."""

import json

import keras
import pytest

import keras_unikd.methods
from benchmark_scripts import load_script
from benchmark_scripts import tensorflow_pass_only
from keras_unikd.experiments import fashion_mnist as experiment

sweep = load_script("sweep")


def configs(setting):
    """The configs of a `(method, settings)` entry's terms, names aside."""
    return [
        {key: value for key, value in term.get_config().items() if key != "name"}
        for term in experiment.method_model_terms(setting)
    ]


def test_knob_settings_change_one_knob_of_the_base():
    table = sweep.knob_settings("dkd")
    # On DKD the base is the benchmark's unikd, on MLKD its unimlkd (with +ls too).
    assert table["dkd"] == experiment.METHODS["dkd"]
    base = table["base"][1]
    assert configs(table["base"]) == configs(experiment.METHODS["unikd"])
    assert configs(sweep.knob_settings("mlkd")["base"]) == configs(experiment.METHODS["unimlkd"])
    assert configs(sweep.knob_settings("dkd+ls")["base"]) == configs(
        experiment.METHODS["unikd+ls"]
    )
    assert len(table) == 15
    for name, (method, options) in table.items():
        if name in ("dkd", "base"):
            continue
        assert method == "unikd"
        changed = {k for k in options if options[k] != base.get(k)}
        assert len(changed) == 1, name
        assert name.startswith(tuple(changed)) or name in (
            "closed form", "fused: stage3+pool", "fused: stage2+stage3+pool",
            "stage3 alone (no AFF)",
        )
    assert table["distribution_temperature=4"][1]["distribution_temperature"] == 4.0
    assert "distribution_temperature=1" not in table  # the base's own value
    assert table["stage3 alone (no AFF)"][1]["student_features"] == ["stage3"]
    # On MLKD the base temperature is UniMLKD's 4, so 1 is swept.
    assert "distribution_temperature=1" in sweep.knob_settings("mlkd")
    # On KD, UniKD's terms sit on KD (every weight 1, no warm-up).
    kd_base = experiment.method_model_terms(sweep.knob_settings("kd")["base"])
    assert [type(term).__name__ for term in kd_base] == ["CrossEntropy", "KD", "UniKDFeatures"]
    assert (kd_base[0].weight, kd_base[1].weight, kd_base[1].warmup_epochs) == (1.0, 1.0, 0)


def test_second_pair_settings():
    table = sweep.second_pair_settings()
    assert list(table) == ["student", "kd", "dkd", "unikd", "unikd-on-kd"]
    method, options = table["unikd-on-kd"]
    assert method == "unikd" and options["logits_loss"] == "kd"
    assert options["student_features"] == experiment.UNIKD_TAPS["student_features"]
    names = [type(term).__name__ for term in experiment.method_model_terms(table["unikd-on-kd"])]
    assert names == ["CrossEntropy", "KD", "UniKDFeatures"]


def test_warmup_settings_list_each_behaviour_once():
    short = sweep.warmup_settings(8)
    # 1/12 of 8 epochs is under one epoch, which acts as none; 1/4 is 2 epochs.
    assert [name for name in short if name.startswith("dkd")][:2] == [
        "dkd, warm-up none", "dkd, warm-up 1/4",
    ]
    assert short["dkd, warm-up 1/4"] == ("dkd", {"warmup_epochs": 2.0})
    long = sweep.warmup_settings(40)
    assert long["unikd, warm-up 1/12"][1] == dict(
        experiment.UNIKD_TAPS, warmup_epochs=pytest.approx(40 / 12)
    )
    assert long["dkd, warm-up 1/4"][1]["warmup_epochs"] == 10.0
    assert long["dkd, warm-up 2 epochs"][1]["warmup_epochs"] == 2
    for table in (short, long):
        lengths = [options["warmup_epochs"] for name, (_, options) in table.items()
                   if name.startswith("dkd")]
        acting = [length if length > 1 else 0 for length in lengths]
        assert len(set(acting)) == len(acting)
        terms = experiment.method_model_terms(table["dkd, warm-up 1/4"])
        assert terms[1].warmup_epochs == table["dkd, warm-up 1/4"][1]["warmup_epochs"]
    args = sweep.parse_args(["--study", "warmup", "--student-epochs", "8"])
    _, pairs, _ = sweep.plan(args)
    assert ("unikd, warm-up 1/4", "unikd, warm-up none") in pairs


def test_defaults_settings_are_the_first_calls():
    table = sweep.defaults_settings()
    assert set(keras_unikd.methods.METHODS) <= set(table)
    kinds = {name: [type(term).__name__ for term in experiment.method_model_terms(setting)]
             for name, setting in table.items() if name != "student"}
    assert kinds["unikd"] == ["CrossEntropy", "DKD", "UniKDFeatures"]
    assert kinds["at"] == ["CrossEntropy", "AttentionTransfer"]
    mlkd = experiment.method_model_terms(table["mlkd"])[1]
    assert mlkd.level_scaling == "balanced" and mlkd.warmup_epochs == "auto"
    unikd = experiment.method_model_terms(table["unikd"])[2]
    assert unikd.teacher_features == "auto"  # the keyword form's automatic taps
    args = sweep.parse_args(["--study", "defaults"])
    _, pairs, _ = sweep.plan(args)
    assert ("mlkd", "student") in pairs and ("mlkd", "kd") in pairs
    assert ("kd", "kd") not in pairs and ("sp", "unikd") in pairs
    assert len(pairs) == (len(table) - 1) + (len(table) - 2) + (len(table) - 3)
    fix = experiment.method_model_terms(table["fitnet+kd (hint_weight=1)"])
    assert [type(term).__name__ for term in fix] == ["CrossEntropy", "KD", "FitNetHint"]
    assert fix[2].weight == 1.0


def test_best_logits_reads_the_accuracy_results(tmp_path):
    path = tmp_path / "accuracy.json"
    means = {"kd": 80.0, "dkd": 81.5, "unikd": 90.0, "mlkd+ls": 81.2}
    path.write_text(json.dumps(
        {"methods": {m: {"summary": {"last_mean": v}} for m, v in means.items()}}
    ))
    assert sweep.best_logits(str(path)) == "dkd"  # unikd is not a logit-only method
    with pytest.raises(SystemExit, match="run benchmarks/accuracy.py first"):
        sweep.best_logits(str(tmp_path / "missing.json"))


def test_fidelity_of_the_teacher_itself():
    logits = keras.random.normal((6, 10), seed=0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Identity()])
    stats = sweep.fidelity(keras.ops.convert_to_numpy(logits), model, logits)
    assert stats["teacher_agreement"] == 1.0
    assert stats["teacher_kl"] == pytest.approx(0.0, abs=1e-6)


@tensorflow_pass_only
def test_sweep_quick(tmp_path, quick_teachers):
    output = tmp_path / "knobs.json"
    sweep.main([
        "--quick", "--logits", "kd", "--settings", "base", "feature_weight=0",
        "--output", str(output), "--cache-dir", quick_teachers,
    ])
    results = json.loads(output.read_text())
    assert results["complete"] and results["study"] == "knobs" and results["logits"] == "kd"
    block = results["widths"]["8"]
    assert list(block["methods"]) == ["base", "feature_weight=0"]
    assert set(block["comparisons"]) == {"feature_weight=0 vs base"}
    run = block["methods"]["base"]["runs"][0]
    assert 0.0 <= run["teacher_agreement"] <= 1.0 and run["teacher_kl"] >= 0.0
    assert "feature_loss" in block["methods"]["base"]["final_losses"]
    assert results["settings"]["feature_weight=0"]["settings"]["feature_weight"] == 0.0
    assert "| feature_weight=0 vs base | 1 |" in (tmp_path / "knobs.md").read_text()

    # The second pair: each setting at both widths (one setting here; the
    # comparisons are checked by the merge test above).
    output = tmp_path / "pair.json"
    sweep.main([
        "--quick", "--study", "second-pair", "--settings", "kd",
        "--output", str(output), "--cache-dir", quick_teachers,
    ])
    results = json.loads(output.read_text())
    assert set(results["widths"]) == {"8", "16"}
    parameters = [results["widths"][w]["student_parameters"] for w in ("8", "16")]
    assert parameters[0] < parameters[1]
    assert all(list(block["methods"]) == ["kd"] for block in results["widths"].values())


def test_merge_joins_runs_split_by_setting(tmp_path):
    protocol = dict(
        study="knobs", logits="kd", seeds=2, quick=False,
        recipe={"subset": 8000, "student_epochs": 7},
        teacher={"last_accuracy": 0.9}, date="2026-12-01", machine="x86_64",
    )

    def runs(*accuracies):
        return {"runs": [
            dict(seed=seed, best_accuracy=a, last_accuracy=a, seconds_per_epoch=1.0,
                 history={"kd_loss": [2.0, 1.0 + seed]}, teacher_agreement=0.9, teacher_kl=0.1)
            for seed, a in enumerate(accuracies)
        ]}

    parts = {
        # Written out of the study's order: the merge restores it.
        "a.json": dict(
            protocol, complete=True, run_seconds=10.0,
            settings={"feature_weight=0": {"feature_weight": 0.0}, "kd": {}},
            widths={"8": {"student_parameters": 6386, "methods": {
                "feature_weight=0": runs(0.79, 0.80), "kd": runs(0.80, 0.81),
            }}},
        ),
        "b.json": dict(
            protocol, complete=False, run_seconds=5.0, settings={"base": {}},
            widths={"8": {"student_parameters": 6386, "methods": {"base": runs(0.82, 0.84)}}},
        ),
    }
    for name, part in parts.items():
        (tmp_path / name).write_text(json.dumps(part))
    paths = [str(tmp_path / name) for name in parts]
    output = tmp_path / "merged.json"
    sweep.main(["--merge", *paths, "--output", str(output)])
    merged = json.loads(output.read_text())
    block = merged["widths"]["8"]
    assert list(block["methods"]) == ["kd", "base", "feature_weight=0"]
    assert set(merged["settings"]) == {"kd", "base", "feature_weight=0"}
    assert not merged["complete"] and merged["run_seconds"] == 15.0
    assert block["comparisons"]["base vs kd"]["differences"] == pytest.approx([2.0, 3.0])
    assert block["comparisons"]["feature_weight=0 vs base"]["mean"] == pytest.approx(-3.5)
    assert block["methods"]["kd"]["final_losses"]["kd_loss"] == pytest.approx(1.5)
    assert "| base vs kd | 2 |" in (tmp_path / "merged.md").read_text()

    with pytest.raises(ValueError, match=r"'feature_weight=0' is in both .*a\.json and .*a\.json"):
        sweep.merged([paths[0], paths[0]])
    (tmp_path / "c.json").write_text(json.dumps(dict(parts["b.json"], logits="dkd")))
    with pytest.raises(ValueError, match=r"other settings \(\['logits'\]\)"):
        sweep.merged([paths[0], str(tmp_path / "c.json")])
