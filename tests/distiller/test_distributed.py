"""Data-parallel training matches one-device training (subprocesses, 2 CPU devices).

Devices must be set up before the backend starts, so each configuration runs
in a fresh process (`workers/distributed.py`): TensorFlow with two logical
CPUs (`MirroredStrategy`) or two single-CPU workers on localhost
(`MultiWorkerMirroredStrategy`); JAX with two host devices
(`DataParallel`, and `ModelParallel` with the documented LayoutMap). Every
run trains the same student (no BatchNormalization) from the same weights on
the same global batches with the deterministic `"gaussian"` form. The same
processes also train from a small teacher-output cache, built here once
before they start: one device against two replicas, two workers and
`DataParallel` (with a CRD term under JAX; under TensorFlow, whose replicas
cannot share CRD's memory banks, CRD is an error).
"""

import json
import os
import socket

import keras
import numpy as np
import pytest

from workers import distributed
from workers.launch import start_worker
from workers.launch import student_weights
from workers.launch import wait_for
from workers.launch import worker_env

TF = keras.backend.backend() == "tensorflow"
pytestmark = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="keras.distribution (DataParallel, ModelParallel) supports JAX only, and "
    "tf.distribute TensorFlow only; under PyTorch, Keras's fit has no data parallelism",
)
# Float32 sums in a different order (per replica, then across replicas);
# observed differences are below 1e-7.
WEIGHT_ATOL = 1e-5
LOSS_RTOL = 1e-5


def assert_same_training(results, other, prefix, reference="single"):
    """`other`'s run `prefix` trained as `results`' one-device run `reference`
    (prints the largest student weight difference)."""
    single = student_weights(results, reference)
    differences = []
    for index, (a, b) in enumerate(zip(single, student_weights(other, prefix))):
        np.testing.assert_allclose(b, a, rtol=0, atol=WEIGHT_ATOL, err_msg=f"weight {index}")
        differences.append(float(np.max(np.abs(b - a))))
    # The logged losses are those of the global batch: not divided by the
    # number of replicas.
    np.testing.assert_allclose(
        other[f"{prefix}/loss"], results[f"{reference}/loss"], rtol=LOSS_RTOL
    )
    print(f"{prefix} vs {reference}: largest weight difference {max(differences):.2g}")


def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def multiworker_env(cluster, index):
    task = {"type": "worker", "index": index}
    return worker_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": task}))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The workers' results by name; under TensorFlow all three run at once."""
    directory = tmp_path_factory.mktemp("distributed")
    cache = directory / "cache"
    distributed.build_cache(str(cache))
    # Added to the XLA_FLAGS of `make test` (faster compiling), not replacing them.
    xla_flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
    env = worker_env(XLA_FLAGS=xla_flags.strip())
    replicas = start_worker(
        "distributed",
        "replicas",
        directory / "replicas.npz",
        cache,
        log=directory / "replicas.log",
        env=env,
    )
    workers = {"replicas": [replicas]}
    if TF:
        cluster = {"worker": [f"localhost:{free_port()}" for _ in range(2)]}
        workers["multiworker"] = [
            start_worker(
                "distributed",
                "multiworker",
                directory / "multiworker.npz",
                cache,
                log=directory / f"worker{index}.log",
                env=multiworker_env(cluster, index),
            )
            for index in range(2)
        ]
    wait_for([process for processes in workers.values() for process in processes])
    return {name: dict(np.load(directory / f"{name}.npz")) for name in workers}


def test_two_replicas_train_like_one_device(results):
    replicas = results["replicas"]
    assert_same_training(replicas, replicas, "replicated")
    if TF:
        # The sampled form draws noise from the heads' seed generators on
        # each replica: it trains, with finite losses.
        assert np.all(np.isfinite(replicas["sampled/loss"]))


def test_two_replicas_train_like_one_device_from_a_teacher_cache(results):
    """No teacher model; the keyed batches, with the cached outputs (a
    `tf.numpy_function` lookup) and example indices, split over the replicas.
    Under JAX the Distiller has a CRD term too: its memory banks and negatives
    are those of one device (one program over the global batch)."""
    replicas = results["replicas"]
    assert ("cached_single/crd_loss" in replicas) == (not TF)
    assert_same_training(replicas, replicas, "cached_replicated", reference="cached_single")


@pytest.mark.skipif(not TF, reason="tf.distribute is TensorFlow's")
def test_crd_refuses_to_train_on_several_tensorflow_replicas(results):
    error = str(results["replicas"]["crd/error"])
    assert error.startswith("ContrastiveRepresentation 'crd' cannot train under a "), error
    assert "strategy of 2 replicas: train it on one device, or under JAX" in error


@pytest.mark.skipif(TF, reason="keras.distribution layouts are a JAX feature")
def test_model_parallel_teacher_layout_trains_like_one_device(results):
    replicas = results["replicas"]
    assert str(replicas["model_parallel/teacher_stage2_spec"]) == "P(None, None, None, 'model')"
    assert_same_training(replicas, replicas, "model_parallel")


@pytest.mark.skipif(not TF, reason="MultiWorkerMirroredStrategy is TensorFlow's")
def test_two_workers_train_like_one_device(results):
    workers = results["multiworker"]
    assert_same_training(results["replicas"], workers, "multiworker")
    assert np.all(np.isfinite(workers["multiworker/val_loss"]))
    # From the cache: DATA auto-sharding gives each worker its half of each
    # global keyed batch.
    assert_same_training(
        results["replicas"], workers, "cached_multiworker", reference="cached_single"
    )
