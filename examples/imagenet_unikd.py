"""
Title: UniKD on ImageNet: ResNet34 -> ResNet18 and ResNet50 -> MobileNet
Author: keras_unikd developers
Date created: 2026/11/26
Last modified: 2026/11/26
Description: Distil an ImageNet student with UniKD from a paper preset, in resumable multi-day runs.
Accelerator: GPU (several for the full recipe); CPU for `--take` smoke runs

## Introduction

The paper's two ImageNet experiments follow the DKD recipe: SGD with
momentum 0.9, batch 512, learning rate 0.2, 100 epochs with x0.1 at epochs
30, 60 and 90, weight decay 1e-4 and temperature 1 (DKD beta 0.5 for
ResNet34 -> ResNet18, 2 for ResNet50 -> MobileNetV1). The presets
`imagenet_resnet34_resnet18` and `imagenet_resnet50_mobilenet` hold these
numbers.

The models:

- ResNet18 / ResNet34: `keras_unikd.models.imagenet_resnet`, the standard
  ImageNet ResNets (11.69M / 21.80M parameters) with the zoo's tap names
  (`stem`, `stage1`..`stage4`, `stage1_preact`.., `pool`, `logits`);
- ResNet50 and MobileNet (V1): `keras.applications` backbones with a
  `pool` -> `logits` head; the preset maps the canonical tap names to
  their layer names (`stage1_preact` is ResNet50's `conv2_block3_add`).

The KD literature distils from torchvision's pretrained teachers (ResNet34
73.31%, ResNet50 76.16%). Keras has no such checkpoints in these
architectures' layouts, so bring a trained teacher (`--teacher`) or let this
example train one from scratch with the classic recipe (90 epochs, batch
256, lr 0.1, x0.1 every 30 epochs): days on one GPU.

ImageNet must be prepared once for TensorFlow Datasets (manual download of
the ILSVRC2012 tar files; see `keras_unikd.data.imagenet`). Smoke runs:

```
python examples/imagenet_unikd.py --epochs 1 --take 64 --image-size 64 --teacher T.keras
python examples/imagenet_unikd.py --epochs 1 --teacher-epochs 5 --take 8 --image-size 64 \
    --batch-size 2 --mock-data
```
"""

"""
## Setup
"""

import argparse
import contextlib
import json
import os

import keras
import tensorflow_datasets as tfds

from keras_unikd import presets
from keras_unikd.callbacks import StudentCheckpoint
from keras_unikd.data.imagenet import imagenet_datasets


def parse_args():
    parser = argparse.ArgumentParser(description="UniKD on ImageNet from a preset.")
    parser.add_argument(
        "--preset",
        default="imagenet_resnet34_resnet18",
        choices=presets.list_presets("imagenet"),
    )
    parser.add_argument("--method", default="unikd", choices=presets.METHODS)
    parser.add_argument("--epochs", type=int, help="default: the recipe's 100")
    parser.add_argument("--teacher-epochs", type=int, help="default: --epochs or 90")
    parser.add_argument("--batch-size", type=int, help="global batch; default: the recipe's 512")
    parser.add_argument(
        "--image-size", type=int, help="default 224; smaller sizes (multiples of 32) for smoke runs"
    )
    parser.add_argument("--take", type=int, help="use only N examples of each split")
    parser.add_argument("--data-dir", help="TensorFlow Datasets directory")
    parser.add_argument("--teacher", help="a trained teacher .keras (skips training)")
    parser.add_argument("--output-dir", default="artifacts/imagenet_unikd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mirrored",
        action="store_true",
        help="train on every visible GPU with tf.distribute.MirroredStrategy (TensorFlow backend)",
    )
    parser.add_argument(
        "--mock-data", action="store_true", help="random ImageNet-like data, for smoke runs"
    )
    return parser.parse_args()


"""
## Data and distribution

`imagenet_datasets` gives the standard pipelines: random-resized crop and
flip for training, resize to 256 and center crop 224 for validation,
normalised with the ImageNet statistics. With `--mirrored`, models,
optimizer and distiller are created under `MirroredStrategy.scope()` and
the batch size is global (split over the GPUs).
"""


def strategy_scope(args):
    if not args.mirrored:
        return contextlib.nullcontext()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("--mirrored needs KERAS_BACKEND=tensorflow.")
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy()
    print(f"MirroredStrategy over {strategy.num_replicas_in_sync} replica(s)")
    return strategy.scope()


"""
## Callbacks for long runs

A 100-epoch ImageNet run takes days, so each epoch is backed up
(`BackupAndRestore`: re-running the same command resumes), logged to CSV
with every loss term, and the best network by validation top-1 (the
student alone, or the teacher) is saved by `keras_unikd.callbacks.StudentCheckpoint`: a
`keras_unikd.callbacks.StudentCheckpoint`, which replaces the file
atomically and keeps its best value across a resume.
"""


def fit(preset, model, network, name, role, epochs, batch_size, args):
    """Trains `model`; returns the best validation top-1 of the whole run."""
    run_dir = os.path.join(args.output_dir, preset.name, name)
    os.makedirs(run_dir, exist_ok=True)
    train_ds, val_ds = imagenet_datasets(
        batch_size=batch_size,
        data_dir=args.data_dir,
        image_size=args.image_size or preset.image_size,
        take=args.take,
        shuffle_seed=args.seed,
    )
    steps = int(train_ds.cardinality())
    optimizer = presets.build_optimizer(preset, steps, role=role, epochs=epochs)
    presets.compile_for_training(preset, model, optimizer)
    best = StudentCheckpoint(os.path.join(run_dir, f"best_{name}.keras"))
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        callbacks=[
            keras.callbacks.BackupAndRestore(
                os.path.join(run_dir, "backup"), delete_checkpoint=False
            ),
            keras.callbacks.CSVLogger(os.path.join(run_dir, "log.csv"), append=True),
            best,
        ],
        verbose=2,
        shuffle=False,
    )
    network.save(os.path.join(run_dir, f"last_{name}.keras"))
    # The checkpoint's record covers the epochs before a resume too.
    with open(best.state_path) as f:
        return json.load(f)["best"]


"""
## The run
"""


def main():
    args = parse_args()
    preset = presets.get_preset(args.preset)
    keras.utils.set_random_seed(args.seed)
    epochs = args.epochs or preset.recipe.epochs
    data_context = (
        tfds.testing.mock_data(num_examples=args.take or 8)
        if args.mock_data
        else contextlib.nullcontext()
    )
    dkd = presets.METHODS["dkd"].resolve(**preset.settings("dkd"))
    print(
        f"Preset {preset.name}: {preset.teacher} -> {preset.student}, method "
        f"{args.method}, DKD beta {dkd['dkd_beta']}, T {dkd['temperature']}; published "
        f"top-1: teacher {preset.published.teacher}, student {preset.published.student}, "
        f"KD {preset.published.kd}, DKD {preset.published.dkd}"
    )
    with data_context, strategy_scope(args):
        teacher = None
        if args.teacher:
            teacher = keras.models.load_model(args.teacher, compile=False)
        elif args.method != "student":
            teacher = presets.build_model(preset, "teacher", args.image_size)
            fit(
                preset, teacher, teacher, "teacher", "teacher",
                args.teacher_epochs or args.epochs or preset.teacher_recipe.epochs,
                args.batch_size or preset.teacher_recipe.batch_size,
                args,
            )
        student = presets.build_model(preset, "student", args.image_size)
        model = presets.build_distiller(preset, teacher, student, args.method, seed=args.seed)
        best = fit(
            preset, model, student, "student", "student", epochs,
            args.batch_size or preset.recipe.batch_size, args,
        )

    """
    ## Result

    The last line compares the student's best validation top-1 with the
    published one for this method (when known).
    """
    published = getattr(preset.published, args.method, None)
    print(f"{args.method}: best top-1 {100 * best:.2f}% (published: {published or '-'})")


if __name__ == "__main__":
    main()
