"""Saves Distillers with keras_unikd at 5efa7cc, and what they compute, for the load test.

Run against that commit (not collected by pytest):
`git worktree add /tmp/old 5efa7cc && cd /tmp/old && KERAS_BACKEND=tensorflow
PYTHONPATH=. python <this file> <output directory>`.
"""

import json
import os
import sys

import keras
import numpy as np

import keras_unikd
from keras_unikd import terms


def net(width, name):
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_conv1")(inputs)
    x = keras.layers.BatchNormalization(name=f"{name}_stage1_preact")(x)
    x = keras.layers.ReLU(name=f"{name}_stage1")(x)
    for stage, channels in ((2, 2 * width), (3, 4 * width)):
        x = keras.layers.Conv2D(
            channels, 3, strides=2, padding="same", activation="relu", name=f"{name}_stage{stage}"
        )(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name=f"{name}_logits")(x), name=name)


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.random((16, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 5, size=(16,)).astype("int32")
    strong = rng.random((16, 12, 12, 1), dtype=np.float32)

    def pair():
        return net(8, "t"), net(4, "s")

    keras.utils.set_random_seed(0)
    distillers = {
        # The keyword form: UniKD on DKD, a fused teacher side.
        "keyword_unikd": lambda: keras_unikd.Distiller(
            *pair(),
            teacher_features=["t_stage1", "t_stage2"],
            student_features=["s_stage1", "s_stage3", "s_pool"],
            seed=5,
            warmup_epochs=3,
        ),
        # A term list with one pooled teacher feature (cacheable) and KD.
        "terms_kd_unikd": lambda: keras_unikd.Distiller(
            *pair(),
            terms=[
                terms.CrossEntropy(weight=0.5),
                terms.KD(temperature=2.0),
                terms.UniKDFeatures(
                    ["t_stage1_preact"], ["s_stage1", "s_stage2", "s_pool"], seed=1
                ),
            ],
        ),
        # Two views: MLKD with UniKD's terms.
        "two_view_unimlkd": lambda: keras_unikd.Distiller(
            *pair(),
            terms=[
                terms.CrossEntropy(views=2),
                terms.MLKD(temperatures=(4.0, 2.0)),
                terms.UniKDFeatures(["t_stage1_preact"], ["s_pool"], seed=2, views=2),
            ],
        ),
        "fitnet": lambda: keras_unikd.FitNetDistiller(
            *pair(),
            teacher_feature="t_stage2",
            student_feature="s_stage2",
            logits_loss="kd",
            warmup_epochs=0,
        ),
    }
    record = {"keras": keras.__version__, "backend": keras.backend.backend(), "commit": "5efa7cc"}
    for name, make in distillers.items():
        distiller = make()
        inputs = (x, strong) if name.startswith("two_view") else x
        distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"])
        distiller.fit(inputs, y, batch_size=8, epochs=1, verbose=0)
        distiller.save(os.path.join(out, f"{name}.keras"))
        total, losses, logits = distiller.compute_distillation_losses(inputs, y, training=False)
        np.savez(
            os.path.join(out, f"{name}.npz"),
            logits=keras.ops.convert_to_numpy(logits),
            **{f"loss_{k}": keras.ops.convert_to_numpy(v) for k, v in losses.items()},
        )
    np.savez(os.path.join(out, "inputs.npz"), x=x, y=y, strong=strong)
    with open(os.path.join(out, "README.json"), "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
