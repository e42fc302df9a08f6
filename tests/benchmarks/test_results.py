"""The benchmarks' statistics over seeds and their results files."""

import json

import numpy as np
import pytest

from keras_unikd.experiments import results

# Student's t quantiles t(0.975, df), from tables.
T_975 = {1: 12.706204736174696, 4: 2.7764451051977987}


def test_paired_difference_against_numpy():
    rng = np.random.default_rng(3)
    a = 80 + rng.normal(size=5)
    b = a - 0.3 + 0.2 * rng.normal(size=5)
    stats = results.paired_difference(a.tolist(), b.tolist())
    d = a - b
    half = T_975[4] * d.std(ddof=1) / np.sqrt(5)
    assert stats["n"] == 5
    assert stats["mean"] == pytest.approx(d.mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(d.std(ddof=1), rel=1e-12)
    assert stats["ci_low"] == pytest.approx(d.mean() - half, rel=1e-9)
    assert stats["ci_high"] == pytest.approx(d.mean() + half, rel=1e-9)
    assert stats["wins"] == int((d > 0).sum())
    np.testing.assert_allclose(stats["differences"], d)


def test_paired_difference_is_narrower_than_unpaired_spread_for_shared_seed_effects():
    # A seed effect common to both methods cancels in the paired difference.
    seed_effect = np.array([-2.0, 1.5, 0.3])
    stats = results.paired_difference(seed_effect + 81.0, seed_effect + 80.5)
    assert stats["mean"] == pytest.approx(0.5) and stats["std"] == pytest.approx(0.0, abs=1e-12)
    assert stats["ci_low"] == pytest.approx(0.5) and stats["wins"] == 3
    assert results.mean_std(seed_effect + 81.0)[1] > 1.0


def test_paired_difference_limits_and_errors():
    one = results.paired_difference([81.0], [80.0])
    assert (one["mean"], one["std"], one["ci_low"], one["ci_high"]) == (1.0, 0.0, None, None)
    with pytest.raises(ValueError, match="same length"):
        results.paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="same length"):
        results.paired_difference([], [])
    with pytest.raises(ValueError, match="confidence"):
        results.paired_difference([1.0, 2.0], [1.0, 1.0], confidence=95)
    with pytest.raises(ValueError, match="non-empty"):
        results.mean_std([])


def run(seed, accuracy):
    return {
        "seed": seed,
        "best_accuracy": accuracy + 0.01,
        "last_accuracy": accuracy,
        "seconds_per_epoch": 2.0,
    }


def test_compare_pairs_the_seeds_both_methods_ran():
    methods = {
        "kd": {"runs": [run(0, 0.80), run(1, 0.82), run(2, 0.81)]},
        "student": {"runs": [run(1, 0.78), run(0, 0.77)]},
    }
    table = results.compare(methods, [("kd", "student"), ("kd", "dkd")])
    assert list(table) == ["kd vs student"]
    stats = table["kd vs student"]
    np.testing.assert_allclose(stats["differences"], [3.0, 4.0])  # seeds 0 and 1, in order
    assert stats["n"] == 2
    half = T_975[1] * np.std([3.0, 4.0], ddof=1) / np.sqrt(2)
    assert stats["ci_high"] == pytest.approx(3.5 + half)


def test_summaries_tables_and_files(tmp_path):
    methods = {"kd": {"runs": [run(0, 0.80), run(1, 0.82)]}}
    summary = results.summarize_runs(methods["kd"]["runs"])
    assert summary["seeds"] == 2
    assert summary["last_mean"] == pytest.approx(81.0)
    assert summary["last_std"] == pytest.approx(np.std([80.0, 82.0], ddof=1))
    assert summary["best_mean"] == pytest.approx(82.0)
    methods["kd"]["summary"] = summary
    table = results.methods_table(methods)
    assert "| kd | 2 | 81.00 ± 1.41 | 82.00 ± 1.41 | 2.0 |" in table
    comparisons = {"kd vs student": results.paired_difference([81.0, 82.0], [80.0, 80.0])}
    assert "| kd vs student | 2 | +1.50 | 0.71 | [-4.85, +7.85] | 2/2 |" in (
        results.comparisons_table(comparisons)
    )

    output = tmp_path / "out" / "accuracy.json"
    record = dict(results.environment(), methods=methods)
    results.write(record, str(output), table)
    assert json.loads(output.read_text())["methods"]["kd"]["summary"] == summary
    assert (tmp_path / "out" / "accuracy.md").read_text() == table + "\n"
    assert set(record) >= {"date", "machine", "backend", "keras_version"}
    # A write that fails half-way (a value JSON cannot hold) leaves the
    # previous results whole, for --resume.
    with pytest.raises(TypeError):
        results.write(dict(record, broken=object()), str(output), table)
    assert json.loads(output.read_text())["methods"]["kd"]["summary"] == summary
    with pytest.raises(ValueError, match=r"\.json"):
        results.write(record, str(tmp_path / "accuracy.txt"), table)
