"""One backend's view of a saved Distiller: losses, predictions, one update.

Usage: python -m workers.parity MODEL.keras BATCH.npz OUT.npz SAVED.keras
(the backend is KERAS_BACKEND). Loads the Distiller, records its loss terms
(deterministic `"gaussian"` form, inference mode) and predictions, takes one
`train_on_batch` step, records the updated weights and saves the stepped
Distiller to SAVED.keras for another backend to load.
"""

import sys

import keras
import numpy as np

import keras_unikd  # noqa: F401  (registers the Distiller and its terms)


def arrays(model):
    return [np.array(keras.ops.convert_to_numpy(weight)) for weight in model.trainable_weights]


def main(model_path, batch_path, out_path, saved_path):
    batch = np.load(batch_path)
    x, y = batch["x"], batch["y"]
    distiller = keras.models.load_model(model_path)
    _, terms, _ = distiller.compute_distillation_losses(x, y, training=False)
    results = {
        f"loss/{name}": float(keras.ops.convert_to_numpy(value)) for name, value in terms.items()
    }
    results["predictions"] = keras.ops.convert_to_numpy(distiller.predict(x, verbose=0))
    before = arrays(distiller)
    distiller.train_on_batch(x, y)
    for index, (old, new) in enumerate(zip(before, arrays(distiller))):
        results[f"update/{index}"] = new - old
    results["predictions_after"] = keras.ops.convert_to_numpy(distiller.predict(x, verbose=0))
    distiller.save(saved_path)
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
