import keras
import numpy as np
import pytest
from keras import ops

import keras_unikd
from keras_unikd.optimizers import TorchSGD

# The rate drops x0.1 from step 4 on (PiecewiseConstantDecay keeps the first
# value while step <= 3).
BOUNDARY, RATES = 3, (0.1, 0.01)
STEPS = 10


def drop_schedule():
    return keras.optimizers.schedules.PiecewiseConstantDecay([BOUNDARY], list(RATES))


def rate(step):
    return RATES[0] if step <= BOUNDARY else RATES[1]


def torch_sgd_reference(w, gradients, momentum=0.9, l2_decay=0.0, nesterov=False):
    """torch.optim.SGD (dampening 0) in NumPy: the weights after each step."""
    w, buf, trajectory = np.array(w, np.float64), None, []
    for step, grad in enumerate(gradients):
        g = grad + l2_decay * w
        if momentum:
            buf = g if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        w = w - rate(step) * g
        trajectory.append(w)
    return trajectory


def keras_sgd_reference(w, gradients, momentum=0.9):
    """keras.optimizers.SGD in NumPy: v = m v - lr g; w += v."""
    w, v, trajectory = np.array(w, np.float64), 0.0, []
    for step, grad in enumerate(gradients):
        v = momentum * v - rate(step) * grad
        w = w + v
        trajectory.append(w)
    return trajectory


def apply_steps(optimizer, w0, gradients):
    variable = keras.Variable(w0)
    trajectory = []
    for grad in gradients:
        optimizer.apply([ops.convert_to_tensor(grad)], [variable])
        trajectory.append(ops.convert_to_numpy(variable))
    return trajectory


def random_problem(seed=0, shape=(3, 2)):
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(shape).astype("float32")
    gradients = [rng.standard_normal(shape).astype("float32") for _ in range(STEPS)]
    return w0, gradients


def test_follows_pytorch_across_a_learning_rate_drop_where_keras_sgd_lags():
    w0, gradients = random_problem()
    ours = apply_steps(TorchSGD(drop_schedule(), momentum=0.9), w0, gradients)
    expected = torch_sgd_reference(w0, gradients)
    for step in range(STEPS):
        np.testing.assert_allclose(ours[step], expected[step], rtol=1e-6, atol=1e-6)
    keras_sgd = apply_steps(keras.optimizers.SGD(drop_schedule(), momentum=0.9), w0, gradients)
    keras_expected = keras_sgd_reference(w0, gradients)
    for step in range(STEPS):
        np.testing.assert_allclose(keras_sgd[step], keras_expected[step], rtol=1e-6, atol=1e-6)
    # Same steps while the rate is constant.
    for step in range(BOUNDARY + 1):
        np.testing.assert_allclose(keras_sgd[step], ours[step], rtol=1e-5, atol=1e-6)
    # At the first step after the drop, Keras's velocity still holds the
    # buffer at the old rate: its step is off by momentum * (old - new) * buf.
    buffer = (ours[BOUNDARY - 1] - ours[BOUNDARY]) / RATES[0]
    ours_step = ours[BOUNDARY + 1] - ours[BOUNDARY]
    keras_step = keras_sgd[BOUNDARY + 1] - keras_sgd[BOUNDARY]
    np.testing.assert_allclose(
        keras_step - ours_step, -0.9 * (RATES[0] - RATES[1]) * buffer, rtol=1e-4, atol=1e-6
    )
    assert np.abs(keras_step - ours_step).max() > 3 * np.abs(ours_step).max()
    assert np.abs(keras_sgd[-1] - ours[-1]).max() > 0.1


def test_coupled_l2_decay_and_nesterov_match_pytorch():
    w0, gradients = random_problem(1)
    for kwargs in (
        dict(l2_decay=0.05),
        dict(nesterov=True),
        dict(nesterov=True, l2_decay=0.05),
        dict(momentum=0.5, l2_decay=0.01),
    ):
        options = {"momentum": 0.9, **kwargs}
        ours = apply_steps(TorchSGD(drop_schedule(), **options), w0, gradients)
        expected = torch_sgd_reference(w0, gradients, **options)
        for step in range(STEPS):
            np.testing.assert_allclose(
                ours[step], expected[step], rtol=1e-6, atol=1e-6, err_msg=f"{kwargs} {step}"
            )


def test_without_momentum_is_plain_sgd_with_no_state():
    w0, gradients = random_problem(2)
    optimizer = TorchSGD(drop_schedule(), l2_decay=0.1)
    ours = apply_steps(optimizer, w0, gradients)
    expected = torch_sgd_reference(w0, gradients, momentum=0.0, l2_decay=0.1)
    np.testing.assert_allclose(ours[-1], expected[-1], rtol=1e-6, atol=1e-6)
    assert [v.name for v in optimizer.variables] == ["iteration"]


def linear_problem(seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((STEPS, 8, 4)).astype("float32")
    y = rng.standard_normal((STEPS, 8, 2)).astype("float32")
    return x, y


def numpy_linear_fit(kernel, bias, x, y, **options):
    """TorchSGD on `mean((x W + b - y)^2)`, one batch per step, in NumPy."""
    w = np.concatenate([kernel, bias[None]]).astype(np.float64)
    trajectory = []
    buf = None
    momentum, l2_decay = options.get("momentum", 0.0), options.get("l2_decay", 0.0)
    for step in range(STEPS):
        inputs = np.concatenate([x[step], np.ones((len(x[step]), 1))], axis=1)
        residual = inputs @ w - y[step]
        g = 2.0 * inputs.T @ residual / residual.size + l2_decay * w
        buf = g if buf is None else momentum * buf + g
        w = w - rate(step) * buf
        trajectory.append(w)
    return trajectory


@pytest.mark.parametrize("jit_compile", ["auto", False])
def test_fit_compiled_follows_pytorch(jit_compile):
    keras.utils.set_random_seed(0)
    x, y = linear_problem()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    kernel, bias = (ops.convert_to_numpy(w) for w in model.weights)
    options = dict(momentum=0.9, l2_decay=0.01)
    model.compile(TorchSGD(drop_schedule(), **options), loss="mse", jit_compile=jit_compile)
    expected = numpy_linear_fit(kernel, bias, x, y, **options)
    for step in range(STEPS):
        model.fit(x[step], y[step], batch_size=8, epochs=1, shuffle=False, verbose=0)
        kernel, bias = (ops.convert_to_numpy(w) for w in model.weights)
        np.testing.assert_allclose(
            np.concatenate([kernel, bias[None]]), expected[step], rtol=1e-5, atol=1e-6
        )
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == STEPS


def test_saved_model_restores_the_optimizer_state(tmp_path):
    keras.utils.set_random_seed(1)
    x, y = linear_problem(4)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(TorchSGD(drop_schedule(), momentum=0.9, nesterov=True, l2_decay=0.01), "mse")
    for step in range(BOUNDARY):
        model.fit(x[step], y[step], batch_size=8, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, TorchSGD)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert len(loaded.optimizer.variables) == 1 + 2  # the iteration, a buffer per weight
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(restored), ops.convert_to_numpy(saved))
    # Both continue identically, across the rate drop.
    for step in range(BOUNDARY, STEPS):
        model.fit(x[step], y[step], batch_size=8, shuffle=False, verbose=0)
        loaded.fit(x[step], y[step], batch_size=8, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(
            ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7
        )


def test_config_and_registered_name():
    optimizer = TorchSGD(drop_schedule(), momentum=0.9, nesterov=True, l2_decay=5e-4)
    config = optimizer.get_config()
    assert (config["momentum"], config["nesterov"], config["l2_decay"]) == (0.9, True, 5e-4)
    assert "weight_decay" not in config
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"] == "keras_unikd>TorchSGD"
    restored = keras.optimizers.deserialize(serialized)
    assert isinstance(restored, TorchSGD) and restored.get_config() == config
    assert float(restored.learning_rate) == pytest.approx(0.1)
    assert keras_unikd.TorchSGD is TorchSGD


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"decoupled `weight_decay`.*pass `l2_decay=wd`"):
        TorchSGD(0.1, momentum=0.9, weight_decay=5e-4)
    TorchSGD(0.1, weight_decay=None)  # What the base get_config writes.
    with pytest.raises(ValueError, match="applies `l2_decay` to every variable"):
        TorchSGD(0.1, l2_decay=1e-4).exclude_from_weight_decay(var_names=["bias"])
    for bad in (-0.1, "0.9", None, True):
        with pytest.raises(ValueError, match="momentum must be a finite number >= 0"):
            TorchSGD(0.1, momentum=bad)
    with pytest.raises(ValueError, match="l2_decay must be a finite number >= 0"):
        TorchSGD(0.1, l2_decay=-1e-4)
    with pytest.raises(ValueError, match="nesterov=True needs a momentum > 0"):
        TorchSGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="nesterov must be True or False"):
        TorchSGD(0.1, momentum=0.9, nesterov="yes")
