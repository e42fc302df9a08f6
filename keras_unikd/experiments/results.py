"""Results of runs over seeds: summaries, paired differences, result files.

The benchmarks run each method with several seeds, where a seed fixes the
student's training subset, initialisation, data order and augmentation. Two
methods run with the same seed differ only in the method, so the per-seed
difference of their accuracies (a paired comparison) removes the spread
those choices cause, which the means' standard deviations include.
"""

import datetime
import json
import math
import os
import platform

import keras
import numpy as np


def mean_std(values):
    """The mean and sample standard deviation (0 for a single value).

    Example:

    >>> mean_std([1.0, 3.0])
    (2.0, 1.4142135623730951)
    """
    values = np.asarray(values, dtype="float64")
    if values.ndim != 1 or not len(values):
        raise ValueError(f"mean_std: expected a non-empty list of numbers; got {values!r}.")
    spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), spread


def summarize_runs(runs):
    """Mean and standard deviation over seeds of the runs' accuracies (%).

    Args:
        runs: Dicts with `best_accuracy` and `last_accuracy` (fractions) and
            `seconds_per_epoch`, as `fashion_mnist.summarize` gives.

    Returns:
        A dict: `seeds`, `best_mean`, `best_std`, `last_mean`, `last_std`
        (percent) and the mean `seconds_per_epoch`.
    """
    best_mean, best_std = mean_std([100 * run["best_accuracy"] for run in runs])
    last_mean, last_std = mean_std([100 * run["last_accuracy"] for run in runs])
    return {
        "seeds": len(runs),
        "best_mean": best_mean,
        "best_std": best_std,
        "last_mean": last_mean,
        "last_std": last_std,
        "seconds_per_epoch": float(np.mean([run["seconds_per_epoch"] for run in runs])),
    }


def paired_difference(a, b, confidence=0.95):
    """Statistics of the per-seed differences `a[i] - b[i]`.

    The interval is Student's t interval of the mean difference:
    `mean +- t(1 - (1 - confidence) / 2, n - 1) * std / sqrt(n)`, with the
    sample standard deviation. It assumes roughly normal differences; with
    3 to 5 seeds it is wide, which is the point: a difference whose interval
    contains 0 is not told apart from no difference.

    Args:
        a: Accuracies of one method, one per seed.
        b: Those of the other method, for the same seeds in the same order.
        confidence: Coverage of the interval.

    Returns:
        A dict: `n`, `mean`, `std` (of the differences), `ci_low`,
        `ci_high` (`None` for a single seed), `wins` (seeds where `a > b`)
        and `differences`.

    Raises:
        ValueError: if the lists are empty or of different lengths, or
            `confidence` is not in (0, 1).

    Example:

    >>> stats = paired_difference([82.0, 83.0, 81.5], [81.0, 82.5, 81.0])
    >>> round(stats["mean"], 3), stats["wins"], round(stats["ci_low"], 3)
    (0.667, 3, -0.05)
    """
    a = np.asarray(a, dtype="float64")
    b = np.asarray(b, dtype="float64")
    if a.ndim != 1 or a.shape != b.shape or not len(a):
        raise ValueError(
            "paired_difference: expected two non-empty lists of the same length, one "
            f"accuracy per seed; got shapes {a.shape} and {b.shape}."
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"paired_difference: confidence must be in (0, 1); got {confidence}.")
    differences = a - b
    n = len(differences)
    mean, std = mean_std(differences)
    low = high = None
    if n > 1:
        from scipy import stats

        half_width = stats.t.ppf(1 - (1 - confidence) / 2, n - 1) * std / math.sqrt(n)
        low, high = mean - half_width, mean + half_width
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "ci_low": None if low is None else float(low),
        "ci_high": None if high is None else float(high),
        "wins": int(np.sum(differences > 0)),
        "differences": differences.tolist(),
    }


def compare(methods, pairs, key="last_accuracy"):
    """Paired differences (percentage points) for the pairs both run.

    Args:
        methods: `{method: {"runs": [run, ...]}}`, each run with a `seed`.
        pairs: `(a, b)` method names; a pair is skipped unless both ran.
        key: The accuracy compared (final test top-1 by default).

    Returns:
        `{"a vs b": paired_difference(...)}` over the seeds both ran,
        in seed order.
    """
    table = {}
    for a, b in pairs:
        if a not in methods or b not in methods:
            continue
        by_seed = [{run["seed"]: 100 * run[key] for run in methods[m]["runs"]} for m in (a, b)]
        seeds = sorted(set(by_seed[0]) & set(by_seed[1]))
        if seeds:
            table[f"{a} vs {b}"] = paired_difference(
                [by_seed[0][s] for s in seeds], [by_seed[1][s] for s in seeds]
            )
    return table


def methods_table(methods):
    """The Markdown table of `{method: {"summary": summarize_runs(...)}}`."""
    lines = [
        "| method | seeds | last top-1 (%) | best top-1 (%) | s / epoch |",
        "|---|---|---|---|---|",
    ]
    for method, entry in methods.items():
        s = entry["summary"]
        lines.append(
            f"| {method} | {s['seeds']} | {s['last_mean']:.2f} ± {s['last_std']:.2f} | "
            f"{s['best_mean']:.2f} ± {s['best_std']:.2f} | {s['seconds_per_epoch']:.1f} |"
        )
    return "\n".join(lines)


def comparisons_table(comparisons):
    """The Markdown table of `compare(...)`'s paired differences."""
    lines = [
        "| comparison | seeds | mean diff. (pts) | std | 95% interval | a > b |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in comparisons.items():
        interval = "-" if c["ci_low"] is None else f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"
        lines.append(
            f"| {name} | {c['n']} | {c['mean']:+.2f} | {c['std']:.2f} | {interval} | "
            f"{c['wins']}/{c['n']} |"
        )
    return "\n".join(lines)


def environment():
    """Date, machine, backend and Keras version, for the results files."""
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
    }


def write(results, output, markdown):
    """Writes `results` to `output` (JSON) and `markdown` next to it (`.md`).

    The JSON file is replaced whole (written beside it, then renamed), so a
    run killed while writing leaves the previous results for `--resume`.
    """
    if not output.endswith(".json"):
        raise ValueError(f"The results file must end in .json; got {output!r}.")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    partial = output + ".partial"
    with open(partial, "w") as handle:
        json.dump(results, handle, indent=2)
    os.replace(partial, output)
    with open(output[: -len(".json")] + ".md", "w") as handle:
        handle.write(markdown + "\n")


def differing_settings(previous, results, keys):
    """The `keys` of `results` whose values `previous` does not share.

    Keys that `results` lacks are ignored.
    """
    return [
        key
        for key in keys
        if key in results and json.dumps(previous.get(key)) != json.dumps(results[key])
    ]


def previous_results(path, results, keys):
    """The results file at `path`, to resume a run, or `None` if there is none.

    Args:
        path: The results file a run writes (`--output`).
        results: The new run's results dict, filled with its settings.
        keys: The keys of `results` whose values the file must share
            (recipe, teacher, ...); keys that `results` lacks are ignored.

    Raises:
        ValueError: when the file was written with other settings, naming
            the keys that differ.
    """
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        previous = json.load(handle)
    differing = differing_settings(previous, results, keys)
    if differing:
        raise ValueError(
            f"Cannot resume {path}: it was written with other settings ({differing}). "
            "Give another output file, or start afresh without resuming."
        )
    return previous


def read_parts(paths, keys):
    """The results files of runs that split one protocol's work, as `(path, results)`.

    Raises:
        ValueError: when a file's `keys` differ from the first file's,
            naming the keys.
    """
    parts = []
    for path in paths:
        with open(path) as handle:
            parts.append((path, json.load(handle)))
    first_path, first = parts[0]
    for path, part in parts[1:]:
        differing = differing_settings(part, first, keys)
        if differing:
            raise ValueError(
                f"Cannot merge {path} with {first_path}: other settings ({differing}). "
                "Merge only runs of the same protocol."
            )
    return parts


def disjoint_union(named_entries, what):
    """One dict from `(path, {name: entry})` pairs whose names are disjoint.

    Raises:
        ValueError: when a name is in two of them (`what` names the option
            that splits the runs, for the message).
    """
    union, origin = {}, {}
    for path, entries in named_entries:
        for name, entry in entries.items():
            if name in union:
                raise ValueError(
                    f"Cannot merge: {name!r} is in both {origin[name]} and {path}. "
                    f"Merge files of runs with disjoint {what}."
                )
            union[name], origin[name] = entry, path
    return union
