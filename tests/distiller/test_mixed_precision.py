"""Distillation under the mixed_float16 and mixed_bfloat16 policies.

The same weights are built in float32 and copied into a Distiller built
under the mixed policy; the loss terms of one training step (computed in
float32 from float16 or bfloat16 activations) and its weight update must
match float32's.
Tolerances, from the activations' precision (10 and 7 mantissa bits):
loss terms rtol 5e-3 / 2e-2 (measured: at most 9e-4 / 5e-3), the step's
weight update 2e-2 / 5e-2 in relative L2 norm (measured: at most 1.2e-3 /
2.4e-2).
"""

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import make_network

TOLERANCES = {
    # policy: (loss terms rtol, update relative L2 error)
    "mixed_float16": (5e-3, 2e-2),
    "mixed_bfloat16": (2e-2, 5e-2),
}


def build():
    keras.utils.set_random_seed(0)
    distiller = keras_unikd.Distiller(
        make_network(8, "t"),
        make_network(4, "s"),
        teacher_features=["t_stage1_preact"],
        student_features=["s_stage1", "s_stage2", "s_stage3", "s_pool"],
        distribution_loss="gaussian",  # deterministic
        warmup_epochs=0,
        seed=0,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    return distiller


def train_one_step(distiller, weights, x, y):
    """One step from `weights` on the whole batch: its loss terms (logged at
    `weights`, before the update) and the update of the trainable weights."""
    distiller.set_weights(weights)
    before = [np.array(v, "float32") for v in distiller.trainable_variables]
    history = distiller.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history
    after = [np.array(v, "float32") for v in distiller.trainable_variables]
    update = np.concatenate([(a - b).ravel() for a, b in zip(after, before)])
    return {name: history[name][0] for name in distiller.loss_term_names}, update


@pytest.fixture(scope="module")
def float32_reference(batch_module):
    keras.mixed_precision.set_global_policy("float32")
    distiller = build()
    weights = distiller.get_weights()
    return weights, train_one_step(distiller, weights, *batch_module)


@pytest.fixture(scope="module")
def batch_module():
    rng = np.random.default_rng(0)
    x = rng.random((16, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 5, size=(16,)).astype("int32")
    return x, y


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", sorted(TOLERANCES), indirect=True)
def test_mixed_policy_matches_float32(policy, float32_reference, batch_module):
    weights, (expected_terms, expected_update) = float32_reference
    distiller = build()
    compute_dtype = policy.split("_")[1]
    assert distiller.student.get_layer("s_stage2").compute_dtype == compute_dtype
    # Under mixed_float16, compile wraps the optimizer for loss scaling; the
    # steps call its scale_loss (else the update would be ~2**15 too small).
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer) == (
        policy == "mixed_float16"
    )

    terms, update = train_one_step(distiller, weights, *batch_module)

    terms_rtol, update_tolerance = TOLERANCES[policy]
    for name, value in expected_terms.items():
        assert np.isfinite(terms[name]), name
        assert terms[name] == pytest.approx(value, rel=terms_rtol), name
    error = np.linalg.norm(update - expected_update) / np.linalg.norm(expected_update)
    assert error < update_tolerance
