"""Accuracy of every distillation method on real data, over several seeds.

Fashion-MNIST (default): the cached ~290k-parameter teacher learns from all
60k training images; a ~6k-parameter student learns from a class-balanced
10k subset with the same optimizer, schedule, epochs and augmentation for
every method (see `keras_unikd.experiments.fashion_mnist`). Each method runs
with several seeds; the script reports the mean and standard deviation of the
best and last test top-1 and the seconds per epoch, writes
`benchmarks/results/accuracy.json` and a Markdown table, and saves the
seed-0 students (in `accuracy_students/` next to it) for
`benchmarks/plots.py`. `--policy mixed_bfloat16` trains the students,
aggregators and heads under that dtype policy.

`--dataset cifar100` runs the same methods on the ResNet32x4 -> ResNet8x4
preset for machines that have the CIFAR-100 data and a GPU.

    python benchmarks/accuracy.py                 # ~50 min on 2 CPU cores
    python benchmarks/accuracy.py --quick         # smoke run: tiny subset, 1 epoch
    python benchmarks/accuracy.py --methods kd unikd --policy mixed_bfloat16 \
        --output benchmarks/results/accuracy_bfloat16.json
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics

import keras

import keras_unikd
from keras_unikd.data import load_fashion_mnist
from keras_unikd.experiments import fashion_mnist as recipe_lib

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["fashion_mnist", "cifar100"], default="fashion_mnist")
    parser.add_argument("--methods", nargs="+", default=list(recipe_lib.METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--student-epochs", type=int, default=recipe_lib.Recipe.student_epochs)
    parser.add_argument("--teacher-epochs", type=int, default=recipe_lib.Recipe.teacher_epochs)
    parser.add_argument("--subset", type=int, default=recipe_lib.Recipe.subset)
    parser.add_argument("--cache-dir", default="artifacts/teachers")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "accuracy.json"))
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
        "--quick",
        action="store_true",
        help="smoke run: 2k training / 1k test images, 1 epoch, 1 seed",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.methods) - set(recipe_lib.METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(recipe_lib.METHODS)}")
    if args.quick:
        args.seeds, args.student_epochs, args.teacher_epochs, args.subset = 1, 1, 1, 512
    return args


def load_dataset(args):
    dataset = load_fashion_mnist()
    if args.quick:
        dataset = dataclasses.replace(
            dataset,
            x_train=dataset.x_train[:2048],
            y_train=dataset.y_train[:2048],
            x_test=dataset.x_test[:1024],
            y_test=dataset.y_test[:1024],
        )
    return dataset


def aggregate(runs):
    def mean_std(key):
        values = [100 * run[key] for run in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.mean(values), spread

    best_mean, best_std = mean_std("best_accuracy")
    last_mean, last_std = mean_std("last_accuracy")
    return {
        "best_mean": best_mean,
        "best_std": best_std,
        "last_mean": last_mean,
        "last_std": last_std,
        "seconds_per_epoch": statistics.mean(run["seconds_per_epoch"] for run in runs),
    }


def markdown_table(results):
    lines = [
        "| method | best top-1 (%) | last top-1 (%) | s / epoch |",
        "|---|---|---|---|",
    ]
    for method, entry in results["methods"].items():
        summary = entry["summary"]
        lines.append(
            f"| {method} | {summary['best_mean']:.2f} ± {summary['best_std']:.2f} | "
            f"{summary['last_mean']:.2f} ± {summary['last_std']:.2f} | "
            f"{summary['seconds_per_epoch']:.1f} |"
        )
    return "\n".join(lines)


def run_fashion_mnist(args):
    recipe = recipe_lib.Recipe(
        teacher_epochs=args.teacher_epochs,
        student_epochs=args.student_epochs,
        subset=args.subset,
    )
    dataset = load_dataset(args)
    teacher_train, _, test = recipe_lib.make_pipelines(dataset, recipe, seed=0)
    cache_dir = os.path.join(args.cache_dir, "quick") if args.quick else args.cache_dir
    teacher, teacher_record = recipe_lib.teacher_or_cached(
        dataset, teacher_train, test, recipe, cache_dir
    )
    keras.mixed_precision.set_global_policy(args.policy)
    # Next to the results file and named after it, so that runs with other
    # outputs (another --policy, say) keep their own students.
    students_dir = os.path.splitext(args.output)[0] + "_students"
    os.makedirs(students_dir, exist_ok=True)
    methods = {}
    for method in args.methods:
        runs = []
        for seed in range(args.seeds):
            # The subset and the augmentation order follow the seed too.
            _, student_train, _ = recipe_lib.make_pipelines(dataset, recipe, seed)
            model, student = recipe_lib.build_student_model(
                method, teacher, dataset, recipe, len(student_train), seed
            )
            print(f"\n== {method}, seed {seed}")
            history = recipe_lib.fit(model, student_train, test, recipe.student_epochs)
            run = recipe_lib.summarize(history)
            run.update(
                seed=seed, history={k: [float(v) for v in vs] for k, vs in history.history.items()}
            )
            runs.append(run)
            if seed == 0:
                student.save(os.path.join(students_dir, f"{method}.keras"))
        methods[method] = {"runs": runs, "summary": aggregate(runs)}
    return {
        "dataset": dataset.name,
        "data_source": dataset.source,
        "test_examples": len(dataset.x_test),
        "recipe": dataclasses.asdict(recipe),
        "seeds": args.seeds,
        "teacher": teacher_record,
        "students_dir": os.path.basename(students_dir),
        "methods": methods,
    }


def cifar_method(preset, method, teacher, student, seed):
    """The model `fit` trains for a benchmark method on a paper preset.

    The preset's own methods come from `presets.build_distiller`; the foil
    and the ablations (`presets.VARIANTS`) change the arguments of theirs.
    """
    from keras_unikd import presets

    if method not in presets.VARIANTS:
        return presets.build_distiller(preset, teacher, student, method, seed=seed)
    base = presets.VARIANTS[method][0]
    kwargs = presets.variant_kwargs(method, presets.distiller_kwargs(preset, base))
    if base == "fitnet":
        return keras_unikd.FitNetDistiller(teacher, student, **kwargs)
    return keras_unikd.Distiller(teacher, student, seed=seed, **kwargs)


def run_cifar100(args):
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
    methods = {}
    for method in args.methods:
        runs = []
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            train, test = cifar100_datasets(
                batch_size=preset.recipe.batch_size, data_dir=args.data_dir,
                shuffle_seed=seed, take=args.take,
            )
            _, student = presets.build_models(preset)
            model = cifar_method(preset, method, teacher, student, seed)
            optimizer = presets.build_optimizer(preset, len(train), epochs=epochs)
            presets.compile_for_training(preset, model, optimizer)
            print(f"\n== {method}, seed {seed}")
            history = recipe_lib.fit(model, train, test, epochs)
            run = recipe_lib.summarize(history)
            run.update(
                seed=seed, history={k: [float(v) for v in vs] for k, vs in history.history.items()}
            )
            runs.append(run)
        methods[method] = {"runs": runs, "summary": aggregate(runs)}
    return {
        "dataset": "cifar100",
        "preset": preset.name,
        "epochs": epochs,
        "seeds": args.seeds,
        "methods": methods,
    }


def main(argv=None):
    args = parse_args(argv)
    runner = run_fashion_mnist if args.dataset == "fashion_mnist" else run_cifar100
    results = runner(args)
    results.update(
        date=datetime.date.today().isoformat(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        backend=keras.backend.backend(),
        keras_version=keras.__version__,
        policy=args.policy,
        quick=args.quick,
    )
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)
    table = markdown_table(results)
    with open(args.output.replace(".json", ".md"), "w") as handle:
        handle.write(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
