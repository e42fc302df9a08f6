"""
Title: Distilling a Vision Transformer into a CNN with UniKD
Author: keras_unikd developers
Date created: 2026/12/01
Last modified: 2026/12/01
Description: A keras-hub ViT teacher, a small CNN student: alone, KD, DKD and UniKD.
Accelerator: None (2 CPU cores are enough)

## Introduction

A teacher and its student need not share an architecture. Here the teacher
is a Vision Transformer from keras-hub and the student the small CNN of
`examples/fashion_mnist_unikd.py`. Logit distillation (KD, DKD) only needs
both networks' logits; UniKD also reads the teacher's intermediate
features, which in a ViT are *tokens* `(batch, 1 + 7 * 7, channels)`, not
maps. `keras_unikd.Distiller` reads them as a 7x7 map after setting the
class token aside, and finds the layers to tap by itself
(`teacher_features="auto"`), printing what it chose.

This example:

1. loads Fashion-MNIST from disk (offline first);
2. trains a small ViT teacher (4 encoder layers, width 64, 4x4 patches) on
   all 60k training images with AdamW (cached on disk);
3. trains the ~6k-parameter CNN student on a 10k-image subset four ways,
   with the same optimizer, schedule and augmentation: alone, KD, DKD and
   UniKD;
4. prints a table of test accuracy and seconds per epoch.

It needs keras-hub (`pip install keras-unikd[hub]`; `make test` installs
it). Run it with `python examples/vit_to_cnn_unikd.py --help`.
"""

"""
## Setup
"""

import argparse

import keras

from keras_unikd.data import load_fashion_mnist
from keras_unikd.experiments import fashion_mnist as recipe_lib

try:
    import keras_hub
except ImportError as error:  # the optional `hub` extra
    raise SystemExit(
        "This example needs keras-hub: pip install 'keras-unikd[hub]'."
    ) from error


def parse_args(argv=None):
    defaults = recipe_lib.Recipe()
    parser = argparse.ArgumentParser(description="ViT teacher -> CNN student on Fashion-MNIST.")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--student-epochs", type=int, default=defaults.student_epochs)
    parser.add_argument(
        "--subset", type=int, default=defaults.subset, help="student training images"
    )
    parser.add_argument("--teacher-subset", type=int, help="teacher training images (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="artifacts/vit_to_cnn")
    parser.add_argument(
        "--cache-dir", default="artifacts/teachers", help="where teachers are cached"
    )
    parser.add_argument("--retrain-teacher", action="store_true")
    return parser.parse_args(argv)


"""
## The teacher: a ViT from keras-hub

`ViTBackbone` cuts the 28x28 image into 49 patches of 4x4, adds a class
token and runs the encoder; `ViTImageClassifier` classifies the class
token. The weights are random here and trained from scratch; for a
pretrained teacher on your own data, start from
`keras_hub.models.ImageClassifier.from_preset("vit_base_patch16_224_imagenet",
num_classes=...)` instead (a download).
"""


def vit_teacher(image_shape, num_classes):
    backbone = keras_hub.models.ViTBackbone(
        image_shape=image_shape,
        patch_size=4,
        num_layers=4,
        num_heads=4,
        hidden_dim=64,
        mlp_dim=128,
    )
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=num_classes)


def teacher_optimizer(steps_per_epoch, epochs):
    """AdamW with a cosine schedule: transformers train poorly with plain SGD."""
    schedule = keras.optimizers.schedules.CosineDecay(
        1e-3, decay_steps=steps_per_epoch * epochs
    )
    return keras.optimizers.AdamW(schedule, weight_decay=0.05)


"""
## The students

The same four methods as `examples/fashion_mnist_unikd.py`. UniKD taps the
student's three stages and pooled vector by name, and the teacher
automatically: the ViT's encoder output (its tokens, as a 7x7 map) and, when
there is one, its pooled vector.
"""

STUDENT_FEATURES = recipe_lib.UNIKD_TAPS["student_features"]
METHODS = {
    "student alone": recipe_lib.METHODS["student"],
    "KD": recipe_lib.METHODS["kd"],
    "DKD": recipe_lib.METHODS["dkd"],
    "UniKD": (
        "unikd",
        dict(warmup_epochs=2, teacher_features="auto", student_features=STUDENT_FEATURES),
    ),
}


def main(argv=None):
    args = parse_args(argv)
    recipe = recipe_lib.Recipe(
        teacher_epochs=args.teacher_epochs,
        student_epochs=args.student_epochs,
        subset=args.subset,
    )
    keras.utils.set_random_seed(args.seed)
    dataset = load_fashion_mnist()
    if args.teacher_subset:
        dataset = recipe_lib.first_examples(dataset, args.teacher_subset)
    teacher_train, student_train, test = recipe_lib.make_pipelines(dataset, recipe, args.seed)
    teacher, teacher_record = recipe_lib.teacher_or_cached(
        dataset,
        teacher_train,
        test,
        recipe,
        args.cache_dir,
        args.seed,
        args.retrain_teacher,
        architecture="vit",
        build_teacher=vit_teacher,
        optimizer=teacher_optimizer(len(teacher_train), recipe.teacher_epochs),
    )
    results = recipe_lib.train_students(
        {label: label for label in METHODS},
        teacher, dataset, recipe, student_train, test, args.seed, table=METHODS,
    )

    """
    ## Results
    """
    recipe_lib.report_results(
        dataset, teacher_record, results, recipe, args.output_dir, vars(args)
    )
    return results


if __name__ == "__main__":
    main()
