"""
Title: Distilling a CNN on Fashion-MNIST with UniKD
Author: keras_unikd developers
Date created: 2026/11/24
Last modified: 2026/11/24
Description: Train a teacher, then a small student four ways: alone, KD, DKD and UniKD.
Accelerator: None (2 CPU cores are enough)

## Introduction

Knowledge distillation trains a small *student* network to imitate a large
*teacher*. UniKD (Huang et al., ECCV 2024) distils the teacher's
*intermediate* features too, but turns them into the same kind of object as
logits first: several student stages are fused by a `MultiStageAggregator`
(the paper's AFF), and a `DistributionHead` (FDP) predicts a Gaussian over
the classes from the fused map. The student's distribution is pulled towards
the teacher's one, each distribution is tied to its own network's logits,
and DKD distils the logits.

This example:

1. loads Fashion-MNIST from disk (offline first);
2. trains a ~300k-parameter teacher on all 60k training images (cached on
   disk, so later runs skip it);
3. trains a ~6k-parameter student on a 10k-image subset four ways, with the
   same optimizer, schedule and augmentation: alone, KD, DKD and UniKD;
4. prints a table of test accuracy and seconds per epoch.

Run it with `make demo`, or `python examples/fashion_mnist_unikd.py --help`.
"""

"""
## Setup
"""

import argparse

import keras

from keras_unikd.data import load_fashion_mnist
from keras_unikd.experiments import fashion_mnist as recipe_lib

DEMO_METHODS = {"student alone": "student", "KD": "kd", "DKD": "dkd", "UniKD": "unikd"}


def parse_args():
    defaults = recipe_lib.Recipe()
    parser = argparse.ArgumentParser(description="Fashion-MNIST: student alone, KD, DKD, UniKD.")
    parser.add_argument("--teacher-epochs", type=int, default=defaults.teacher_epochs)
    parser.add_argument("--student-epochs", type=int, default=defaults.student_epochs)
    parser.add_argument(
        "--subset", type=int, default=defaults.subset, help="student training images"
    )
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="artifacts/demo")
    parser.add_argument(
        "--cache-dir", default="artifacts/teachers", help="where teachers are cached"
    )
    parser.add_argument("--retrain-teacher", action="store_true")
    return parser.parse_args()


"""
## Data

`load_fashion_mnist` looks in `$KERAS_UNIKD_DATA`, then where Debian's
`dataset-fashion-mnist` package puts the files, then Keras's cache, and
downloads only as a last resort. Without any of these it falls back to
scikit-learn's 8x8 digits, so the example always runs.

The student sees a class-balanced subset of the teacher's training images;
both get random flips and 2-pixel crops. Every run uses SGD with momentum 0.9
and a cosine-decayed learning rate from 0.05. Under TensorFlow, XLA is off:
it slows these small CNNs down on a CPU (349 vs 198 ms per teacher step,
measured on 2 cores).

## The teacher

Trained once on all training images and cached as a `.keras` file next to a
JSON file with its test accuracy, so later runs skip it.

## The students

`keras_unikd.Distiller` runs the frozen teacher (inference mode) and the
student once per step. KD and DKD distil the logits only. UniKD also taps the
teacher's pre-activation stage-1 feature and the student's three stages plus
its pooled vector; the student's stages are fused by a `MultiStageAggregator`
and both sides predict a Gaussian over the classes with a `DistributionHead`:

```python
keras_unikd.Distiller(
    teacher, student,
    teacher_features=["stage1_preact"],
    student_features=["stage1", "stage2", "stage3", "pool"],
    logits_loss="dkd", dkd_beta=8.0, distribution_loss="sampled",
    warmup_epochs=2,
)
```

The logits loss warms up over 2 epochs instead of the paper's 20 (of 240),
because the schedule is short.
"""


def main():
    args = parse_args()
    recipe = recipe_lib.Recipe(
        teacher_epochs=args.teacher_epochs,
        student_epochs=args.student_epochs,
        subset=args.subset,
        batch_size=args.batch_size,
    )
    keras.utils.set_random_seed(args.seed)
    dataset = load_fashion_mnist()
    teacher_train, student_train, test = recipe_lib.make_pipelines(dataset, recipe, args.seed)
    teacher, teacher_record = recipe_lib.teacher_or_cached(
        dataset, teacher_train, test, recipe, args.cache_dir, args.seed, args.retrain_teacher
    )
    results = recipe_lib.train_students(
        DEMO_METHODS, teacher, dataset, recipe, student_train, test, args.seed
    )

    """
    ## Results
    """
    recipe_lib.report_results(
        dataset, teacher_record, results, recipe, args.output_dir, vars(args)
    )


if __name__ == "__main__":
    main()
