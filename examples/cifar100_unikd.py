"""
Title: Reproducing UniKD on CIFAR-100 with presets
Author: keras_unikd developers
Date created: 2026/11/26
Last modified: 2026/11/26
Description: From a paper preset, train a CIFAR-100 teacher and distil it with UniKD, DKD and KD.
Accelerator: GPU (a full 240-epoch run); CPU for `--take` smoke runs

## Introduction

UniKD (Huang et al., ECCV 2024) distils a teacher into a student with one
kind of constraint for every stage: the student's stage features are fused
(AFF, `keras_unikd.MultiStageAggregator`) and turned into a Gaussian over
the 100 classes (FDP, `keras_unikd.DistributionHead`), pulled towards the
distribution predicted from the teacher's stage-1 feature, while DKD distils
the logits.

The paper's CIFAR-100 experiments all share one recipe (SGD, batch 64, 240
epochs, x0.1 at epochs 150/180/210) and differ by teacher/student pair and a
few loss hyper-parameters. `keras_unikd.presets` holds each experiment as
data. This example:

1. picks a preset (default: ResNet32x4 -> ResNet8x4);
2. trains the teacher with the preset's teacher recipe, or loads one;
3. trains the student with each requested method (default: UniKD, DKD, KD);
4. prints the measured top-1 next to the published numbers.

The command line `keras-unikd` does the same one method at a time, with
checkpoints that survive a crash; see `docs/reproduction.md`.

A full reproduction (the defaults) takes GPU hours. For a smoke run:

```
python examples/cifar100_unikd.py --epochs 1 --take 512
python examples/cifar100_unikd.py --epochs 1 --take 64 --mock-data  # no dataset needed
```
"""

"""
## Setup
"""

import argparse
import contextlib
import json
import os
import time

import keras
import tensorflow_datasets as tfds

from keras_unikd import presets
from keras_unikd.data.cifar100 import cifar100_datasets
from keras_unikd.methods import method_views


def parse_args():
    parser = argparse.ArgumentParser(description="UniKD on CIFAR-100 from a preset.")
    parser.add_argument(
        "--preset",
        default="cifar100_resnet32x4_resnet8x4",
        choices=presets.list_presets("cifar100"),
    )
    parser.add_argument("--methods", default="unikd,dkd,kd", help="comma-separated")
    parser.add_argument("--epochs", type=int, help="default: the recipe's 240")
    parser.add_argument("--teacher-epochs", type=int, help="default: --epochs or 240")
    parser.add_argument("--take", type=int, help="use only N examples of each split")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's 64")
    parser.add_argument("--data-dir", help="TensorFlow Datasets directory")
    parser.add_argument("--teacher", help="a trained teacher .keras (skips training)")
    parser.add_argument("--output-dir", default="artifacts/cifar100_unikd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mock-data",
        action="store_true",
        help="random data shaped like CIFAR-100 (tfds.testing.mock_data), for smoke runs",
    )
    return parser.parse_args()


"""
## The preset

A preset is a frozen dataclass. It names the models, the taps, the loss
hyper-parameters of every method, the two recipes and the published
numbers. Nothing in it is code, so it prints (and serialises) as is.
"""


def describe(preset):
    recipe = preset.recipe
    print(f"Preset {preset.name}: {preset.teacher} -> {preset.student}")
    print(
        f"  student recipe: SGD lr {recipe.learning_rate}, momentum {recipe.momentum}, "
        f"wd {recipe.weight_decay}, batch {recipe.batch_size}, {recipe.epochs} epochs, "
        f"x{recipe.lr_decay_rate} at {recipe.lr_decay_epochs}"
    )
    unikd = presets.METHODS["unikd"].resolve(**preset.settings("unikd"))
    print(
        f"  UniKD: teacher taps {list(unikd['teacher_features'])}, student taps "
        f"{list(unikd['student_features'])}; DKD alpha {unikd['dkd_alpha']}, beta "
        f"{unikd['dkd_beta']}, T {unikd['temperature']}, warm-up {unikd['warmup_epochs']} epochs"
    )
    published = preset.published
    print(
        f"  published top-1: teacher {published.teacher}, student {published.student}, "
        f"KD {published.kd}, DKD {published.dkd}"
    )


"""
## Data

`cifar100_datasets` reads CIFAR-100 through TensorFlow Datasets (downloaded
on first use, or prepared beforehand with `tfds build cifar100`), applies
the standard crop + flip augmentation and normalises with the CIFAR-100
statistics. `take` keeps the first N examples of each split. MLKD and
UniMLKD train on two views of each image: `two_views=True` yields
`((weak, strong), labels)` batches, the strong view adding RandAugment and
Cutout (the authors' recipe); evaluation stays single-view.
"""


def load_data(batch_size, args, two_views=False):
    return cifar100_datasets(
        batch_size=batch_size,
        data_dir=args.data_dir,
        shuffle_seed=args.seed,
        take=args.take,
        two_views=two_views,
    )


"""
## Training helper

Every run, teacher or student, is the same: an optimizer from the recipe
(`TorchSGD`: momentum and weight decay in PyTorch's form, and a step
schedule counted in optimizer steps), `compile_for_training`, `fit`. The
schedule's decay epochs scale with `--epochs` (150/180/210 of 240 become
1/1/1 of 1), so short runs keep the recipe's shape.
"""


def fit(preset, model, train_ds, test_ds, epochs, role):
    steps = int(train_ds.cardinality())
    optimizer = presets.build_optimizer(preset, steps, role=role, epochs=epochs)
    presets.compile_for_training(preset, model, optimizer)
    start = time.perf_counter()
    history = model.fit(
        train_ds, validation_data=test_ds, epochs=epochs, verbose=2, shuffle=False
    )
    accuracies = history.history["val_accuracy"]
    return {
        "best_top1": 100 * max(accuracies),
        "last_top1": 100 * accuracies[-1],
        "seconds_per_epoch": (time.perf_counter() - start) / epochs,
    }


"""
## The teacher

The KD literature trains each CIFAR teacher once with the same recipe and
reuses it (ResNet32x4 reaches 79.42%). Pass `--teacher` to reuse yours.
"""


def get_teacher(preset, args, epochs):
    if args.teacher:
        return keras.models.load_model(args.teacher, compile=False), None
    teacher = presets.build_model(preset, "teacher")
    train_ds, test_ds = load_data(args.batch_size or preset.teacher_recipe.batch_size, args)
    print(f"\n== teacher {preset.teacher} ({teacher.count_params():,} parameters)")
    record = fit(preset, teacher, train_ds, test_ds, epochs, role="teacher")
    os.makedirs(args.output_dir, exist_ok=True)
    teacher.save(os.path.join(args.output_dir, "teacher.keras"))
    return teacher, record


"""
## The students

`build_distiller` reads the method's hyper-parameters from the preset:
UniKD is DKD (alpha 1, the preset's beta, T=4, 20-epoch warm-up) plus the
distribution terms; KD uses mdistiller's weights (0.1 CE + 0.9 KD, T=4).
Each method starts from a freshly initialised student.
"""


def main():
    args = parse_args()
    preset = presets.get_preset(args.preset)
    describe(preset)
    keras.utils.set_random_seed(args.seed)
    epochs = args.epochs or preset.recipe.epochs
    teacher_epochs = args.teacher_epochs or args.epochs or preset.teacher_recipe.epochs
    batch_size = args.batch_size or preset.recipe.batch_size

    data_context = (
        tfds.testing.mock_data(num_examples=args.take or 64)
        if args.mock_data
        else contextlib.nullcontext()
    )
    results = {}
    with data_context:
        teacher, results["teacher"] = get_teacher(preset, args, teacher_epochs)
        for method in args.methods.split(","):
            two_views = method_views(method) == 2
            train_ds, test_ds = load_data(batch_size, args, two_views=two_views)
            student = presets.build_model(preset, "student")
            model = presets.build_distiller(preset, teacher, student, method, seed=args.seed)
            print(f"\n== {method}: {preset.student} ({student.count_params():,} parameters)")
            results[method] = fit(preset, model, train_ds, test_ds, epochs, role="student")

    """
    ## Results

    Measured top-1 (best and last epoch) against the published numbers.
    Short runs are far below them; the full recipe is what the paper used.
    """
    published = preset.published
    print("\n| run | best top-1 (%) | last top-1 (%) | s / epoch | published (%) |")
    print("|---|---|---|---|---|")
    for run, record in results.items():
        if record is None:
            continue
        reference = published.teacher if run == "teacher" else published.of(run)
        print(
            f"| {run} | {record['best_top1']:.2f} | {record['last_top1']:.2f} | "
            f"{record['seconds_per_epoch']:.1f} | {reference if reference else '-'} |"
        )
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump({"preset": preset.to_dict(), "results": results, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
