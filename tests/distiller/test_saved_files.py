"""`.keras` files saved by keras_unikd at 5efa7cc (before the teacher source, the
method table and the cache package) load and compute what they computed then.

`tests/saved/5efa7cc/` holds four trained Distillers (the keyword form, a term
list with a pooled teacher feature, a two-view MLKD + UniKD one and a
`FitNetDistiller`), saved under TensorFlow by `tests/saved/save_5efa7cc.py`
run against that commit, with the student's logits and the loss terms they
gave on fixed inputs (`training=False`: no sampling noise). The other backends
read them too; their float32 arithmetic differs from TensorFlow's by up to
2e-6 on a loss term (FitNet's KD term of 1.5e-4 under PyTorch), hence the
absolute tolerance of 1e-5.
"""

import os
import warnings

import keras
import numpy as np
import pytest

import keras_unikd

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVED = os.path.join(TESTS, "saved", "5efa7cc")
NAMES = ("keyword_unikd", "terms_kd_unikd", "two_view_unimlkd", "fitnet")


@pytest.mark.parametrize("name", NAMES)
def test_file_saved_at_5efa7cc_loads_and_computes_the_same(name):
    inputs = np.load(os.path.join(SAVED, "inputs.npz"))
    expected = np.load(os.path.join(SAVED, f"{name}.npz"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = keras.saving.load_model(os.path.join(SAVED, f"{name}.keras"))
    assert isinstance(loaded, keras_unikd.Distiller)
    x = (inputs["x"], inputs["strong"]) if name.startswith("two_view") else inputs["x"]
    _, losses, logits = loaded.compute_distillation_losses(x, inputs["y"], training=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(logits), expected["logits"], rtol=1e-5, atol=1e-6
    )
    saved_losses = {key[len("loss_"):] for key in expected.files if key.startswith("loss_")}
    assert set(losses) == saved_losses
    for key in saved_losses:
        np.testing.assert_allclose(
            float(keras.ops.convert_to_numpy(losses[key])), expected[f"loss_{key}"],
            rtol=1e-5, atol=1e-5, err_msg=key,
        )
