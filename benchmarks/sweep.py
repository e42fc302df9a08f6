"""Where UniKD's own terms add accuracy, how long to warm up, and what the defaults give.

The studies use the accuracy benchmark's protocol
(`keras_unikd.experiments.fashion_mnist.BENCHMARK`: the cached teacher, an
8k subset, 7 epochs) and 3 seeds per setting; a seed fixes the subset,
initialisation, data order and augmentation, so each setting is compared
with its reference seed by seed (mean difference, std, t 95% interval).

`--study knobs` (default): UniKD's feature terms (AFF over the student's
stages 1-3 and pooled vector, FDP on both sides, sampled distributions) on
top of one logit loss, `--logits`; by default the logit-only method with the
best final top-1 in `benchmarks/results/accuracy.json` (kd, dkd, mlkd or
one with `+ls`). From that base one knob changes at a time: the feature and
consistency weights (0, 0.5, 2), the distribution temperature, the closed
form instead of one sample, and which student stages are fused (stage 3 and
the pooled vector; stages 2-3 and pooled; stage 3 alone, without AFF).
Each setting is compared with the base, and the base with the logit loss
alone. 15 settings x 3 seeds: about 65 minutes on 2 idle cores on a
single-view logit loss (kd, dkd), about 135 on MLKD (two views), estimated
like the accuracy benchmark's budget from measured per-epoch CPU times.

`--study second-pair`: why KD alone can match or beat UniKD. The repository
records no such second Fashion-MNIST pair (neither the benchmarks' results
nor the README), so this study takes a second student size: the same
teacher with a student of width 16 (25k parameters) beside the benchmark's
width 8 (6.4k). At each width it runs student, kd, dkd, unikd and UniKD's
terms on KD (`unikd-on-kd`), and splits unikd - kd into what the logit loss
changes (dkd - kd) and what UniKD's terms add (unikd - dkd, and unikd-on-kd
- kd), with each student's fidelity to the teacher (top-1 agreement and
KL(teacher || student) on the test set) and its final loss terms. 2 widths x
5 methods x 3 seeds: about 35 minutes on 2 idle cores.

`--study warmup`: how long the logits loss should warm up on a run of
`--student-epochs` epochs. DKD and UniKD (the benchmark's taps) with no
warm-up, the paper's 1/12 of the run (its 20 of 240 epochs), a quarter of
the run, a fixed 2 epochs and `warmup_epochs="auto"`, each listed once per
behaviour, compared seed by seed with the paper's 1/12. The evidence for
the `"auto"` rule: runs of 8 and 40 epochs (`--student-epochs`).

`--study defaults`: every method the way a user first calls it, with no
tuning: the keyword form's defaults for KD, DKD, MLKD, UniKD (automatic
taps) and UniMLKD, the method table's for FitNet (the middle stage, which
it needs named) and AT; each compared with the student alone and with KD.

    python benchmarks/sweep.py                       # knobs, on the best logit loss
    python benchmarks/sweep.py --logits dkd          # knobs, on DKD (UniKD itself)
    python benchmarks/sweep.py --study second-pair
    python benchmarks/sweep.py --study warmup --student-epochs 40 --seeds 10
    python benchmarks/sweep.py --study defaults --seeds 5 --teacher-cache artifacts/tc
    python benchmarks/sweep.py --quick --logits kd   # smoke run

Each study writes its own results, `benchmarks/results/sweep_<study>.json`
and `.md` (rewritten after every run; `--resume` carries on from them).

On 2 cores two processes with one TensorFlow thread each
(`TF_NUM_INTRAOP_THREADS=1`), disjoint `--settings` and their own
`--output`s get through a study sooner than one; `--merge` joins their
results files:

    python benchmarks/sweep.py --merge a.json b.json \\
        --output benchmarks/results/sweep_knobs.json
"""

import argparse
import dataclasses
import json
import math
import os

import numpy as np
from keras import ops

from keras_unikd import analysis
from keras_unikd.experiments import fashion_mnist as recipe_lib
from keras_unikd.experiments import results as results_lib
from keras_unikd.terms.base import auto_warmup_epochs

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# The logit-only methods a knob sweep can build on.
LOGIT_METHODS = ("kd", "dkd", "mlkd", "kd+ls", "dkd+ls", "mlkd+ls")
SECOND_PAIR_WIDTHS = (8, 16)


def best_logits(accuracy_results):
    """The logit-only method with the best mean final top-1 in an accuracy results file."""
    if not os.path.exists(accuracy_results):
        raise SystemExit(
            f"--logits auto reads {accuracy_results}, which does not exist: run "
            "benchmarks/accuracy.py first, or pass --logits (one of "
            f"{', '.join(LOGIT_METHODS)})."
        )
    with open(accuracy_results) as handle:
        methods = json.load(handle)["methods"]
    ran = [m for m in LOGIT_METHODS if m in methods]
    if not ran:
        raise SystemExit(f"{accuracy_results} has none of {LOGIT_METHODS}; pass --logits.")
    return max(ran, key=lambda m: methods[m]["summary"]["last_mean"])


def knob_settings(logits):
    """`{name: (method, settings)}`: the logit loss alone, the base, one knob each.

    The base is `logits` plus UniKD's feature terms as the benchmark's
    unikd (on DKD or KD) or unimlkd (on MLKD) has them, with the same
    `+ls`, so `--logits dkd` makes the base unikd and `--logits mlkd`
    unimlkd.
    """
    method, settings = recipe_lib.METHODS[logits]
    plain = logits.split("+")[0]
    family = "unimlkd" if plain == "mlkd" else "unikd"
    base_temperature = 4.0 if family == "unimlkd" else 1.0
    base = dict(settings, distribution_temperature=base_temperature, **recipe_lib.UNIKD_TAPS)
    if plain == "kd":
        base["logits_loss"] = "kd"
    base_method = family + logits[len(plain):]
    changes = {
        **{f"feature_weight={w:g}": {"feature_weight": w} for w in (0.0, 0.5, 2.0)},
        **{f"consistency_weight={w:g}": {"consistency_weight": w} for w in (0.0, 0.5, 2.0)},
        **{
            f"distribution_temperature={t:g}": {"distribution_temperature": t}
            for t in (1.0, 2.0, 4.0, 8.0)
            if t != base_temperature
        },
        "closed form": {"distribution_loss": "gaussian"},
        "fused: stage3+pool": {"student_features": ["stage3", "pool"]},
        "fused: stage2+stage3+pool": {"student_features": ["stage2", "stage3", "pool"]},
        "stage3 alone (no AFF)": {"student_features": ["stage3"]},
    }
    table = {logits: (method, settings), "base": (base_method, base)}
    for name, change in changes.items():
        table[name] = (base_method, dict(base, **change))
    return table


def second_pair_settings():
    """student, kd, dkd, unikd, and UniKD's terms on KD."""
    methods = recipe_lib.METHODS
    table = {name: methods[name] for name in ("student", "kd", "dkd", "unikd")}
    table["unikd-on-kd"] = (
        "unikd",
        dict(methods["kd"][1], logits_loss="kd", **recipe_lib.UNIKD_TAPS),
    )
    return table


def warmup_settings(epochs):
    """`{name: (method, settings)}`: DKD and UniKD (explicit taps) with each warm-up.

    None, the paper's 1/12 of the run (its 20 of 240 epochs), a quarter of
    the run, a fixed 2 epochs and `"auto"`. A warm-up that acts like an
    earlier one at this run length is listed once, under the earlier name: a
    quarter of 8 epochs is 2, and a warm-up of at most one epoch is none
    (epochs count from 1, so its factor is 1 from the first epoch on).
    """
    auto = float(ops.convert_to_numpy(auto_warmup_epochs(epochs)))
    lengths = {"none": 0, "1/12": epochs / 12, "1/4": epochs / 4, "2 epochs": 2, "auto": auto}
    unique = {}
    for name, length in lengths.items():
        acts = [other if other > 1 else 0 for other in unique.values()]
        if not any(math.isclose(length if length > 1 else 0, act, rel_tol=1e-6) for act in acts):
            unique[name] = length
    table = {}
    for method in ("dkd", "unikd"):
        taps = recipe_lib.UNIKD_TAPS if method == "unikd" else {}
        for name, length in unique.items():
            table[f"{method}, warm-up {name}"] = (method, dict(warmup_epochs=length, **taps))
    return table


def paper_warmup(table, name):
    """The setting of `name`'s method in a warm-up table that warms up like the
    paper (1/12 of the run; listed as none when that is at most one epoch)."""
    method = name.split(",")[0]
    paper = f"{method}, warm-up 1/12"
    return paper if paper in table else f"{method}, warm-up none"


# The paper's feature baselines, with their automatic taps.
BASELINES = ("nst", "kdsvd", "vid", "ofd", "reviewkd", "sp", "pkt", "rkd", "crd")


def defaults_settings():
    """`{name: (method, settings)}`: every method as a user first calls it.

    The keyword form's defaults for what it builds (`Distiller(teacher,
    student, **keywords)`: KD, DKD, MLKD, UniKD with automatic taps, UniMLKD),
    the method table's for the rest (FitNet on the middle stage; AT, DIST and
    the feature baselines with their automatic taps), and the student alone;
    then the settings that the construction warnings of FitNet's and AT's
    defaults name.
    """
    keyword = recipe_lib.KEYWORD_FORM
    fitnet_taps = {"teacher_feature": "stage2", "student_feature": "stage2"}
    return {
        "student": ("student", {}),
        "kd": (keyword, {"logits_loss": "kd", "distribution_loss": None}),
        "dkd": (keyword, {"distribution_loss": None}),
        "mlkd": (keyword, {"logits_loss": "mlkd", "distribution_loss": None}),
        "unikd": (keyword, {}),
        "unimlkd": (keyword, {"logits_loss": "mlkd"}),
        "fitnet": ("fitnet", fitnet_taps),
        "at": ("at", {}),
        "dist": ("dist", {}),
        **{name: (name, {}) for name in BASELINES},
        # The settings that the warnings of FitNet's and AT's defaults name.
        "fitnet+kd (hint_weight=1)": ("fitnet+kd", dict(fitnet_taps, hint_weight=1.0)),
        "at (feature_weight=100)": ("at", {"feature_weight": 100.0}),
        "at (feature_weight=10)": ("at", {"feature_weight": 10.0}),
        "at+kd": ("at+kd", {"feature_weight": 1000.0}),
        "at+kd (feature_weight=10)": ("at+kd", {"feature_weight": 10.0}),
    }


def fidelity(teacher_logits, student, test):
    """Top-1 agreement with the teacher and mean KL(teacher || student) on `test`."""
    student_logits = analysis.predict_logits(student, test)

    def log_softmax(logits):
        shifted = logits - logits.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    teacher_log_p, student_log_p = log_softmax(teacher_logits), log_softmax(student_logits)
    kl = np.sum(np.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)
    agreement = np.argmax(teacher_logits, -1) == np.argmax(student_logits, -1)
    return {"teacher_agreement": float(agreement.mean()), "teacher_kl": float(kl.mean())}


def parse_args(argv=None):
    benchmark = recipe_lib.BENCHMARK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--study", choices=["knobs", "second-pair", "warmup", "defaults"], default="knobs"
    )
    parser.add_argument(
        "--logits",
        default="auto",
        choices=("auto",) + LOGIT_METHODS,
        help="--study knobs: the logit loss under UniKD's terms; auto: the best logit-only "
        "method of --accuracy-results",
    )
    parser.add_argument(
        "--accuracy-results", default=os.path.join(RESULTS_DIR, "accuracy.json")
    )
    parser.add_argument("--settings", nargs="+", help="run only these settings (by name)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--student-epochs", type=int, default=benchmark.student_epochs)
    parser.add_argument("--subset", type=int, default=benchmark.subset)
    parser.add_argument("--cache-dir", default="artifacts/teachers")
    parser.add_argument(
        "--teacher-cache",
        metavar="DIR",
        help="train on keyed pipelines; the settings whose terms allow it read the "
        "teacher's outputs from a cache per seed, DIR/seed<k> (built when missing)",
    )
    parser.add_argument("--output", help="default: benchmarks/results/sweep_<study>.json")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in --output (same settings) and do the rest; "
        "a larger --seeds adds seeds",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="RESULTS",
        help="merge results files of runs split by --settings (same study) into --output",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2k / 1k images, 1 epoch, 1 seed"
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be positive")
    if args.quick:
        args.seeds, args.student_epochs, args.subset = 1, 1, 512
    args.output = args.output or os.path.join(
        RESULTS_DIR, f"sweep_{args.study.replace('-', '_')}.json"
    )
    return args


# What runs that split a study by --settings must share to be merged.
PROTOCOL_KEYS = ("study", "logits", "seeds", "quick", "recipe", "teacher")
# What a run must share with the file it resumes: the same, but more seeds may follow.
RESUME_KEYS = tuple(key for key in PROTOCOL_KEYS if key != "seeds") + ("settings",)


def merged(paths):
    """One results dict from files of runs that split a study's settings.

    The files must share the protocol (`PROTOCOL_KEYS`) and each setting
    must come from one file. The merged results keep the first file's date
    and machine, sum the run times, are complete when all parts are, and
    list the settings in the study's order.
    """
    parts = results_lib.read_parts(paths, PROTOCOL_KEYS)
    first = parts[0][1]
    study = dict(
        first, settings={k: v for _, part in parts for k, v in part["settings"].items()}
    )
    order = list(study_table(study["study"], study["logits"], study["recipe"]["student_epochs"]))
    widths = {}
    for width in first["widths"]:
        blocks = [(path, part["widths"].get(width, {"methods": {}})) for path, part in parts]
        methods = results_lib.disjoint_union(
            [(path, block["methods"]) for path, block in blocks], "--settings"
        )
        widths[width] = dict(
            student_parameters=next(
                block["student_parameters"] for _, block in blocks if block["methods"]
            ),
            methods={name: methods[name] for name in sorted(methods, key=order.index)},
        )
    return dict(
        study,
        widths=widths,
        complete=all(part["complete"] for _, part in parts),
        run_seconds=sum(part["run_seconds"] for _, part in parts),
        merged_from=[os.path.basename(path) for path, _ in parts],
    )


def study_table(study, logits, epochs):
    """`{setting: (method, settings)}` of a study, all its settings."""
    if study == "knobs":
        return knob_settings(logits)
    if study == "warmup":
        return warmup_settings(epochs)
    if study == "defaults":
        return defaults_settings()
    return second_pair_settings()


def plan(args):
    """`(table, pairs, widths)` of the study: settings, (a, b) comparisons, student widths."""
    widths = (recipe_lib.BENCHMARK.student_width,)
    if args.study == "knobs":
        if args.logits == "auto":
            args.logits = best_logits(args.accuracy_results)
        table = study_table(args.study, args.logits, args.student_epochs)
        pairs = [("base", args.logits)] + [
            (name, "base") for name in table if name not in ("base", args.logits)
        ]
    elif args.study == "warmup":
        table = study_table(args.study, None, args.student_epochs)
        pairs = [(name, paper_warmup(table, name)) for name in table]
        pairs = [(a, b) for a, b in pairs if a != b]
    elif args.study == "defaults":
        table = study_table(args.study, None, args.student_epochs)
        pairs = [(name, "student") for name in table if name != "student"]
        pairs += [(name, "kd") for name in table if name not in ("student", "kd")]
        pairs += [(name, "unikd") for name in table if name not in ("student", "kd", "unikd")]
    else:
        table = study_table(args.study, None, args.student_epochs)
        pairs = [
            ("kd", "student"), ("unikd", "kd"), ("dkd", "kd"), ("unikd", "dkd"),
            ("unikd-on-kd", "kd"),
        ]
        widths = SECOND_PAIR_WIDTHS
    if args.settings:
        unknown = sorted(set(args.settings) - set(table))
        if unknown:
            raise SystemExit(f"Unknown settings {unknown}; this study has {list(table)}.")
        table = {name: table[name] for name in args.settings}
        pairs = [pair for pair in pairs if set(pair) <= set(table)]
    return table, pairs, widths


def markdown(results):
    parts = [
        f"Sweep `{results['study']}`"
        + (f" on `{results['logits']}`" if results.get("logits") else "")
        + f": teacher {100 * results['teacher']['last_accuracy']:.2f}%, "
        f"{results['recipe']['subset']} training images, {results['recipe']['student_epochs']} "
        f"epochs; {results['machine']}, {results['date']}; runs took "
        f"{results['run_seconds'] / 60:.1f} min"
        + ("" if results["complete"] else " (incomplete)")
        + "."
    ]
    parts += results.get("notes", [])  # How the file's runs relate to this script.
    for width, block in results["widths"].items():
        lines = [
            "| setting | teacher agreement (%) | KL(teacher, student) |",
            "|---|---|---|",
        ]
        for name, entry in block["methods"].items():
            runs = entry["runs"]
            agreement = np.mean([100 * run["teacher_agreement"] for run in runs])
            kl = np.mean([run["teacher_kl"] for run in runs])
            lines.append(f"| {name} | {agreement:.2f} | {kl:.4f} |")
        parts += [
            f"Student width {width} ({block['student_parameters']:,} parameters):",
            results_lib.methods_table(block["methods"]),
            "\n".join(lines),
            "Paired differences of the final test top-1 (a - b, percentage points):",
            results_lib.comparisons_table(block["comparisons"]),
        ]
    return "\n\n".join(parts)


def save(results, pairs, output):
    """Writes `results` with each setting's summary and the paired comparisons."""
    for block in results["widths"].values():
        for entry in block["methods"].values():
            entry["summary"] = results_lib.summarize_runs(entry["runs"])
            entry["final_losses"] = {
                key: float(np.mean([run["history"][key][-1] for run in entry["runs"]]))
                for key in entry["runs"][0]["history"]
                if key.endswith("loss")
            }
        block["comparisons"] = results_lib.compare(block["methods"], pairs)
    results_lib.write(results, output, markdown(results))


def seed_cache(args, teacher, dataset, recipe, seed, table):
    """The teacher-output cache of `seed` for the table's cacheable settings, or
    `False` when none is."""
    if not recipe_lib.cached_teacher_needs(table).logits:
        return False
    directory = os.path.join(args.teacher_cache, f"seed{seed}")
    return recipe_lib.build_seed_cache(directory, teacher, dataset, recipe, seed, table=table)


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        results = merged(args.merge)
        args.study, args.logits, args.settings = results["study"], results["logits"], None
        save(results, plan(args)[1], args.output)
        print("\n" + markdown(results))
        return
    table, pairs, widths = plan(args)
    recipe = dataclasses.replace(
        recipe_lib.BENCHMARK, student_epochs=args.student_epochs, subset=args.subset
    )
    if args.quick:
        recipe = dataclasses.replace(recipe, teacher_epochs=1)
    dataset, teacher, teacher_record = recipe_lib.load_benchmark(
        recipe, args.cache_dir, quick=args.quick
    )
    _, _, test = recipe_lib.make_pipelines(dataset, recipe, seed=0)
    teacher_logits = analysis.predict_logits(teacher, test)
    results = dict(
        results_lib.environment(),
        study=args.study,
        logits=args.logits if args.study == "knobs" else None,
        settings={name: {"method": m, "settings": s} for name, (m, s) in table.items()},
        seeds=args.seeds,
        quick=args.quick,
        recipe=dataclasses.asdict(recipe),
        teacher=teacher_record,
        complete=False,
        run_seconds=0.0,
        widths={},
    )
    previous = args.resume and results_lib.previous_results(args.output, results, RESUME_KEYS)
    if previous:
        results.update(widths=previous["widths"], run_seconds=previous["run_seconds"])

    for width in widths:
        width_recipe = dataclasses.replace(recipe, student_width=width)
        block = results["widths"].setdefault(str(width), {"methods": {}})
        for seed in range(args.seeds):
            cache = None
            for name in table:
                done = block["methods"].get(name, {}).get("runs", [])
                if seed in [run["seed"] for run in done]:
                    continue
                if args.teacher_cache and cache is None:
                    cache = seed_cache(args, teacher, dataset, width_recipe, seed, table)
                run, student = recipe_lib.train_student(
                    name, teacher, dataset, width_recipe, seed, table=table,
                    teacher_cache=cache or None,
                )
                run.update(fidelity(teacher_logits, student, test))
                block["methods"].setdefault(name, {"runs": []})["runs"].append(run)
                block["student_parameters"] = student.count_params()
                results["run_seconds"] += run["seconds"]
                save(results, pairs, args.output)
    results["complete"] = True
    save(results, pairs, args.output)
    print("\n" + markdown(results))


if __name__ == "__main__":
    main()
