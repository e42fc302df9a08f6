"""The same Distiller file gives the same numbers under TensorFlow, JAX and PyTorch.

A Distiller is saved here, then loaded by one subprocess per backend
(`workers/parity.py`), each computing the loss terms, the predictions and one
SGD step on the same batch and saving what it stepped; the files the other
backends saved are loaded back here. The test runs once, in the TensorFlow
pass of `make test`: it exercises all three backends itself.
"""

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import make_network
from workers.launch import start_worker
from workers.launch import wait_for
from workers.launch import worker_env

BACKENDS = ("tensorflow", "jax", "torch")

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="runs every backend in subprocesses; once, from the TensorFlow pass",
)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    directory = tmp_path_factory.mktemp("parity")
    keras.utils.set_random_seed(0)
    distiller = keras_unikd.Distiller(
        make_network(8, "t"),
        make_network(4, "s"),
        teacher_features=["t_stage1_preact", "t_stage2"],
        student_features=["s_stage1", "s_stage2", "s_stage3", "s_pool"],
        distribution_loss="gaussian",
        warmup_epochs=0,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.random((16, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 5, size=(16,)).astype("int32")
    model_path, batch_path = directory / "distiller.keras", directory / "batch.npz"
    distiller.save(model_path)
    np.savez(batch_path, x=x, y=y)
    processes = [
        start_worker(
            "parity",
            model_path,
            batch_path,
            directory / f"{backend}.npz",
            directory / f"{backend}.keras",
            log=directory / f"{backend}.log",
            env=worker_env(KERAS_BACKEND=backend),
        )
        for backend in BACKENDS
    ]
    wait_for(processes, timeout=600)
    return (
        directory,
        x,
        {backend: dict(np.load(directory / f"{backend}.npz")) for backend in BACKENDS},
    )


def test_loss_terms_and_predictions_agree(results):
    _, _, by_backend = results
    reference = by_backend["tensorflow"]
    names = [key for key in reference if key.startswith("loss/")]
    assert len(names) == 4
    for backend in ("jax", "torch"):
        for name in names:
            np.testing.assert_allclose(
                by_backend[backend][name], reference[name], rtol=1e-4, err_msg=f"{backend} {name}"
            )
        np.testing.assert_allclose(
            by_backend[backend]["predictions"], reference["predictions"], rtol=1e-4, atol=1e-5
        )


def test_one_step_updates_agree(results):
    _, _, by_backend = results
    reference = by_backend["tensorflow"]
    updates = sorted(
        (key for key in reference if key.startswith("update/")), key=lambda key: int(key[7:])
    )
    # Entries whose gradient is zero in exact arithmetic (a bias before a
    # batch norm) hold float noise: the absolute tolerance is relative to the
    # largest update of the step.
    scale = max(np.abs(reference[key]).max() for key in updates)
    assert scale > 0
    for backend in ("jax", "torch"):
        for key in updates:
            np.testing.assert_allclose(
                by_backend[backend][key],
                reference[key],
                rtol=1e-3,
                atol=1e-3 * scale,
                err_msg=f"{backend} {key}",
            )


def test_files_saved_by_the_other_backends_load_here(results):
    directory, x, by_backend = results
    for backend in ("jax", "torch"):
        loaded = keras.models.load_model(directory / f"{backend}.keras")
        assert isinstance(loaded, keras_unikd.Distiller)
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0),
            by_backend[backend]["predictions_after"],
            rtol=1e-4,
            atol=1e-5,
        )
