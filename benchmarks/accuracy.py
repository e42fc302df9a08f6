"""Accuracy of every distillation method on real data, over seeds, with paired differences.

Fashion-MNIST (default), the protocol of
`keras_unikd.experiments.fashion_mnist.BENCHMARK`: the cached teacher (289k
parameters, trained 10 epochs on all 60k training images: 92.68%
test top-1) and a student of 6.4k parameters (width 8) trained on a
class-balanced 8k subset for 7 epochs, batch 128, SGD momentum 0.9, cosine
learning rate from 0.05, flip + 2-pixel crop, the same for every method
(two-view methods add the strong view to the same weak batches).

Why these settings. The student must sit where distillation matters: the
student alone stays far below the teacher and KD lifts it clearly (the
calibration run in the README: 75.84% alone, 79.95% with KD,
teacher 92.68%). A width-8 student seeing 8k labelled images 7 times
cannot reach the teacher, and the teacher's soft targets carry information
that the labels do not. The cost is set by the 70 runs
(16 methods, 5 or 3 seeds) and by the teacher's forward pass, which every
distillation step pays (about 2x for the two-view methods, whose teacher
sees both views): measured per-epoch CPU times give about 88 minutes on 2
idle cores for 8k images x 7 epochs (10k x 8, the demo's, would take about
122). Fewer images would let the subset drawn by each seed dominate the
spread; fewer epochs would leave DKD's 2-epoch warm-up most of the run.

The main methods (student, kd, dkd, mlkd, unikd, unimlkd and their logit
standardization variants `+ls`) run 5 seeds, the ablations (fitnet,
fitnet+kd, unikd-gaussian, fdp-only, aff+fdp-no-logits) 3. A seed fixes the
subset, the initialisation, the data order, the augmentation and the
sampling noise, so two methods run with the same seed differ only in the
method: besides each method's mean ± std, the script gives the per-seed
(paired) difference of the final test top-1 for kd vs student, unikd vs
dkd, unimlkd vs mlkd and each `+ls` vs its method: mean, standard
deviation, Student's t 95% interval and the seeds won. The test accuracy
is measured after every epoch, on all 10k test images; "best" is the best
epoch's (chosen on the test set, so optimistic), "last" the final one,
which the comparisons use. The seeds are the outer loop and the results
file is rewritten after every run, so an interrupted run keeps what it
finished, and `--resume` carries on from it.

Writes `benchmarks/results/accuracy.json` and `accuracy.md`, and saves the
seed-0 students (in `accuracy_students/` next to them) for
`benchmarks/plots.py`. `--policy mixed_bfloat16` trains the students,
aggregators and heads under that dtype policy. Training the teacher the
first time adds about 20 minutes on 2 idle cores (it is cached under
`--cache-dir`, keyed by its training settings).

`--teacher-cache DIR` trains every method on keyed pipelines (each view a
function of the seed, epoch and example: `keras_unikd.data.keyed`) and lets
the distillers whose terms read only the teacher's logits and pooled
features (all but FitNet's) take the teacher's outputs from a cache instead
of running the teacher: one cache per seed, `DIR/seed<k>`, built before the
seed's first run (its time and size go into the results, apart from the
runs') and reused when it is there. Give each process its own `DIR`.

`--dataset cifar100` runs the same methods on the ResNet32x4 -> ResNet8x4
preset for machines that have the CIFAR-100 data and a GPU.

    python benchmarks/accuracy.py                 # the whole benchmark, ~125 min
    python benchmarks/accuracy.py --quick         # smoke run: tiny subset, 1 epoch
    python benchmarks/accuracy.py --methods kd unikd --policy mixed_bfloat16 \\
        --output benchmarks/results/accuracy_bfloat16.json

On 2 cores two processes with one TensorFlow thread each
(`TF_NUM_INTRAOP_THREADS=1`) and disjoint `--methods` (and `--output`s) get
through the runs sooner than one; `--merge` joins their results files:

    python benchmarks/accuracy.py --merge part1.json part2.json \\
        --output benchmarks/results/accuracy.json
"""

import argparse
import dataclasses
import os
import shutil
import time

import keras

from keras_unikd.experiments import fashion_mnist as recipe_lib
from keras_unikd.experiments import results as results_lib
from keras_unikd.methods import METHODS as METHOD_TABLE
from keras_unikd.methods import VARIANTS
from keras_unikd.methods import with_logit_standardization

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# Each logit method with logit standardization.
LOGIT_STANDARDIZED = tuple(
    variant.name for variant in VARIANTS.values()
    if variant.transform is with_logit_standardization
)
MAIN_METHODS = tuple(
    method for method in recipe_lib.METHODS
    if method in ("student", "kd", "dkd", "mlkd", "unikd", "unimlkd") + LOGIT_STANDARDIZED
)
ABLATIONS = tuple(method for method in recipe_lib.METHODS if method not in MAIN_METHODS)
# The paper's baselines: the methods of the table (not variants) outside the
# main ones, each compared with the student alone, KD and UniKD.
BASELINES = tuple(method for method in ABLATIONS if method in METHOD_TABLE)
# (a, b): the paired differences a - b reported. The first shows the regime
# (what distillation adds), the next two what UniKD's terms add to their
# logit loss, then what logit standardization adds, then each baseline
# against the student alone, KD and UniKD.
PAIRS = (
    ("kd", "student"),
    ("unikd", "dkd"),
    ("unimlkd", "mlkd"),
    *((variant, VARIANTS[variant].method) for variant in LOGIT_STANDARDIZED),
    *((baseline, other) for baseline in BASELINES for other in ("student", "kd", "unikd")),
)


def parse_args(argv=None):
    benchmark = recipe_lib.BENCHMARK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["fashion_mnist", "cifar100"], default="fashion_mnist")
    parser.add_argument("--methods", nargs="+", default=list(MAIN_METHODS + ABLATIONS))
    parser.add_argument("--seeds", type=int, help="seeds of the main methods (default 5)")
    parser.add_argument("--ablation-seeds", type=int, help="seeds of the ablations (default 3)")
    parser.add_argument("--student-epochs", type=int, default=benchmark.student_epochs)
    parser.add_argument("--teacher-epochs", type=int, default=benchmark.teacher_epochs)
    parser.add_argument("--subset", type=int, default=benchmark.subset)
    parser.add_argument("--student-width", type=int, default=benchmark.student_width)
    parser.add_argument("--cache-dir", default="artifacts/teachers")
    parser.add_argument(
        "--teacher-cache",
        metavar="DIR",
        help="train every method on keyed pipelines, the distillers that can from "
        "teacher-output caches built in DIR/seed<k> (one per seed, reused when there); "
        "Fashion-MNIST only",
    )
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "accuracy.json"))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in --output (same protocol) and do the rest",
    )
    parser.add_argument(
        "--policy",
        default="float32",
        help="dtype policy of the students, aggregators and heads, e.g. "
        "mixed_bfloat16; the teacher keeps the one it was trained with",
    )
    cifar = parser.add_argument_group("--dataset cifar100")
    cifar.add_argument("--preset", default="cifar100_resnet32x4_resnet8x4")
    cifar.add_argument("--teacher", help="the preset's trained teacher (.keras)")
    cifar.add_argument("--data-dir", help="tensorflow-datasets data_dir")
    cifar.add_argument("--epochs", type=int, help="default: the preset's (240)")
    cifar.add_argument("--take", type=int, help="limit the examples (smoke runs)")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="RESULTS",
        help="merge results files of runs split by --methods (same protocol) into --output",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2k training / 1k test images, 1 epoch, 1 seed unless --seeds",
    )
    args = parser.parse_args(argv)
    if args.teacher_cache and args.dataset != "fashion_mnist":
        parser.error(
            "--teacher-cache is for the Fashion-MNIST protocol; for a preset, build a cache "
            "with `keras-unikd cache-teacher` and train from it with the Python API"
        )
    unknown = sorted(set(args.methods) - set(recipe_lib.METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(recipe_lib.METHODS)}")
    default_seeds = 1 if args.quick else None
    args.seeds = args.seeds or default_seeds or 5
    args.ablation_seeds = args.ablation_seeds or default_seeds or 3
    if min(args.seeds, args.ablation_seeds) < 1:
        parser.error("--seeds and --ablation-seeds must be positive")
    if args.quick:
        args.student_epochs, args.teacher_epochs, args.subset = 1, 1, 512
    return args


def seeds_of(method, args):
    return args.seeds if method in MAIN_METHODS else args.ablation_seeds


def pending_runs(args, results):
    """`(seed, method)` of the runs still to do, seeds outermost.

    A run is done when `results` (a resumed results file) holds it.
    """
    for seed in range(max(seeds_of(method, args) for method in args.methods)):
        for method in args.methods:
            runs = results["methods"].get(method, {}).get("runs", [])
            if seed < seeds_of(method, args) and seed not in [run["seed"] for run in runs]:
                yield seed, method


# What a resumed results file must share with this run.
RESUME_KEYS = (
    "dataset", "recipe", "teacher", "policy", "quick", "backend", "preset", "epochs",
    "teacher_outputs",
)


def resumed(results, args):
    """`results` with the runs of `args.output`, under `--resume`."""
    previous = args.resume and results_lib.previous_results(args.output, results, RESUME_KEYS)
    if not previous:
        return results
    methods = {m: entry for m, entry in previous["methods"].items() if m in args.methods}
    runs = [run for entry in methods.values() for run in entry["runs"]]
    print(f"Resuming {args.output}: {len(runs)} runs done.")
    return dict(
        results,
        methods=methods,
        run_seconds=sum(run["seconds"] for run in runs),
        run_cpu_seconds=sum(run["cpu_seconds"] for run in runs),
        teacher_cache_builds=previous.get("teacher_cache_builds", []),
    )


def merged(paths, output):
    """One results dict from files of runs that split the methods between them.

    The files must share the protocol (`RESUME_KEYS`) and each method must
    come from one file. The merged results (to be written to `output`) keep
    the first file's date and machine, sum the run times, are complete when
    all parts are, and list the methods in the benchmark's order.
    """
    parts = results_lib.read_parts(paths, RESUME_KEYS)
    first = parts[0][1]
    methods = results_lib.disjoint_union(
        [(path, part["methods"]) for path, part in parts], "--methods"
    )
    order = list(MAIN_METHODS + ABLATIONS)
    return dict(
        first,
        methods={m: methods[m] for m in sorted(methods, key=order.index)},
        seeds={m: s for _, part in parts for m, s in part["seeds"].items()},
        complete=all(part["complete"] for _, part in parts),
        run_seconds=sum(part["run_seconds"] for _, part in parts),
        run_cpu_seconds=sum(part["run_cpu_seconds"] for _, part in parts),
        teacher_cache_builds=cache_builds(parts),
        students_dir=os.path.basename(students_dir_of(output)),
        merged_from=[os.path.basename(path) for path, _ in parts],
    )


def cache_builds(parts):
    """The per-seed cache builds of merged parts, one per seed: parts that
    reopened a seed's cache (a build of no time) count the build once."""
    builds = {}
    for _, part in parts:
        for build in part.get("teacher_cache_builds", []):
            if build["seconds"] > builds.get(build["seed"], {"seconds": -1.0})["seconds"]:
                builds[build["seed"]] = build
    return [builds[seed] for seed in sorted(builds)]


def students_dir_of(output):
    """Where a run writing `output` saves its seed-0 students."""
    return os.path.splitext(output)[0] + "_students"


def merge_students(paths, output):
    """Copies the seed-0 students of the runs in `paths` next to `output`."""
    target = students_dir_of(output)
    os.makedirs(target, exist_ok=True)
    for path in paths:
        source = students_dir_of(path)
        if os.path.isdir(source) and os.path.abspath(source) != os.path.abspath(target):
            for name in os.listdir(source):
                shutil.copy2(os.path.join(source, name), target)


def add_summaries(results):
    """Each method's summary over its seeds and the paired comparisons."""
    methods = results["methods"]
    for entry in methods.values():
        entry["summary"] = results_lib.summarize_runs(entry["runs"])
    results["comparisons"] = results_lib.compare(methods, PAIRS)


def markdown(results):
    if results["dataset"] == "cifar100":
        heading = f"CIFAR-100, preset {results['preset']}, {results['epochs']} epochs."
    else:
        recipe, teacher = results["recipe"], results["teacher"]
        heading = (
            f"Fashion-MNIST ({results['test_examples']} test images). Teacher "
            f"{100 * teacher['last_accuracy']:.2f}% ({teacher['epochs']} epochs); student width "
            f"{recipe['student_width']} ({results['student_parameters']:,} parameters), "
            f"{recipe['subset']} training images, {recipe['student_epochs']} epochs."
        )
    parts = [
        heading,
        f"{results['backend']} backend, Keras {results['keras_version']}, policy "
        f"{results['policy']}, {results['machine']}, {results['date']}; runs took "
        f"{results['run_seconds'] / 60:.1f} min ({results['run_cpu_seconds'] / 60:.1f} CPU-min)"
        + ("" if results["complete"] else " (incomplete: interrupted or still running)")
        + "."
        + cache_note(results),
        results_lib.methods_table(results["methods"]),
    ]
    if results["comparisons"]:
        parts += [
            "Paired differences of the final test top-1, a - b in percentage points over "
            "the seeds both ran (same subset, initialisation and data order):",
            results_lib.comparisons_table(results["comparisons"]),
        ]
    return "\n\n".join(parts)


def cache_note(results):
    """What the markdown says of the teacher-output caches, if any."""
    if results.get("teacher_outputs") != "cached":
        return ""
    builds = results.get("teacher_cache_builds", [])
    return (
        " Keyed pipelines; the distillers read the teacher's outputs from "
        f"{len(builds)} per-seed caches, built in "
        f"{sum(build['seconds'] for build in builds) / 60:.1f} min "
        f"({sum(build['cpu_seconds'] for build in builds) / 60:.1f} CPU-min, "
        f"{sum(build['bytes'] for build in builds) / 2**20:.1f} MiB), not counted above."
    )


def save(results, args):
    add_summaries(results)
    results_lib.write(results, args.output, markdown(results))


def run_fashion_mnist(args, results):
    recipe = dataclasses.replace(
        recipe_lib.BENCHMARK,
        teacher_epochs=args.teacher_epochs,
        student_epochs=args.student_epochs,
        subset=args.subset,
        student_width=args.student_width,
    )
    dataset, teacher, teacher_record = recipe_lib.load_benchmark(
        recipe, args.cache_dir, quick=args.quick
    )
    keras.mixed_precision.set_global_policy(args.policy)
    # Next to the results file and named after it, so that runs with other
    # outputs (another --policy, say) keep their own students.
    students_dir = students_dir_of(args.output)
    os.makedirs(students_dir, exist_ok=True)
    results.update(
        dataset=dataset.name,
        data_source=dataset.source,
        test_examples=len(dataset.x_test),
        recipe=dataclasses.asdict(recipe),
        teacher=teacher_record,
        students_dir=os.path.basename(students_dir),
    )
    results.update(resumed(results, args))
    caches = {}
    for seed, method in pending_runs(args, results):
        if args.teacher_cache and seed not in caches:
            caches[seed] = seed_cache(args, teacher, dataset, recipe, seed, results)
        run, student = recipe_lib.train_student(
            method, teacher, dataset, recipe, seed, teacher_cache=caches.get(seed)
        )
        results["methods"].setdefault(method, {"runs": []})["runs"].append(run)
        results["student_parameters"] = student.count_params()
        results["run_seconds"] += run["seconds"]
        results["run_cpu_seconds"] += run["cpu_seconds"]
        if seed == 0:
            student.save(os.path.join(students_dir, f"{method}.keras"))
        save(results, args)


def seed_cache(args, teacher, dataset, recipe, seed, results):
    """The teacher-output cache of `seed` in `--teacher-cache`, built (and
    its build's time and size recorded in `results`) unless already there."""
    directory = os.path.join(args.teacher_cache, f"seed{seed}")
    start, cpu_start = time.perf_counter(), recipe_lib.cpu_seconds()
    cache = recipe_lib.build_seed_cache(directory, teacher, dataset, recipe, seed, verbose=1)
    builds = results.setdefault("teacher_cache_builds", [])
    if seed not in [build["seed"] for build in builds]:
        builds.append(dict(
            seed=seed,
            seconds=time.perf_counter() - start,
            cpu_seconds=recipe_lib.cpu_seconds() - cpu_start,
            bytes=cache.disk_bytes(),
        ))
    return cache


def cifar_method(preset, method, teacher, student, seed):
    """The model `fit` trains for a benchmark method (or variant) on a paper preset."""
    from keras_unikd import presets

    return presets.build_distiller(preset, teacher, student, method, seed=seed)


def run_cifar100(args, results):
    from keras_unikd import presets
    from keras_unikd.data import cifar100_datasets

    if not args.teacher:
        raise SystemExit(
            "--dataset cifar100 needs a trained teacher: run `keras-unikd "
            f"train-teacher --preset {args.preset}` and pass --teacher PATH."
        )
    preset = presets.get_preset(args.preset)
    epochs = args.epochs or preset.recipe.epochs
    teacher = keras.models.load_model(args.teacher)
    keras.mixed_precision.set_global_policy(args.policy)
    results.update(dataset="cifar100", preset=preset.name, epochs=epochs)
    results.update(resumed(results, args))
    for seed, method in pending_runs(args, results):
        keras.utils.set_random_seed(seed)
        _, student = presets.build_models(preset)
        model = cifar_method(preset, method, teacher, student, seed)
        train, test = cifar100_datasets(
            batch_size=preset.recipe.batch_size, data_dir=args.data_dir, shuffle_seed=seed,
            take=args.take, two_views=recipe_lib.training_views(model) == 2,
        )
        optimizer = presets.build_optimizer(preset, len(train), epochs=epochs)
        presets.compile_for_training(preset, model, optimizer)
        print(f"\n== {method}, seed {seed}")
        start, cpu_start = time.perf_counter(), recipe_lib.cpu_seconds()
        history = recipe_lib.fit(model, train, test, epochs)
        run = dict(
            recipe_lib.summarize(history),
            seed=seed,
            seconds=time.perf_counter() - start,
            cpu_seconds=recipe_lib.cpu_seconds() - cpu_start,
            history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        )
        results["methods"].setdefault(method, {"runs": []})["runs"].append(run)
        results["run_seconds"] += run["seconds"]
        results["run_cpu_seconds"] += run["cpu_seconds"]
        save(results, args)


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        results = merged(args.merge, args.output)
        merge_students(args.merge, args.output)
        save(results, args)
        print(markdown(results))
        return
    results = dict(
        results_lib.environment(),
        policy=args.policy,
        quick=args.quick,
        teacher_outputs="cached" if args.teacher_cache else "online",
        seeds={method: seeds_of(method, args) for method in args.methods},
        complete=False,
        run_seconds=0.0,
        run_cpu_seconds=0.0,
        methods={},
    )
    runner = run_fashion_mnist if args.dataset == "fashion_mnist" else run_cifar100
    runner(args, results)
    results["complete"] = True
    save(results, args)
    print("\n" + markdown(results))


if __name__ == "__main__":
    main()
