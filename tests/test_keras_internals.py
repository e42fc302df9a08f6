"""Fails when Keras changes under the private internals of keras_unikd.keras_internals.

Each check names what the workaround relies on; if one fails after a Keras
upgrade, read the module's docstring and re-check the Keras bug it names.
"""

import inspect

import keras
import pytest

import keras_unikd
from keras_unikd import keras_internals

BACKEND = keras.backend.backend()


def test_only_keras_internals_touches_private_keras_methods():
    overridden = {
        name
        for name in vars(keras_internals.KerasInternals)
        if name.startswith("_") and not name.startswith("__")
    }
    expected = {"tensorflow": {"_maybe_symbolic_build"}, "jax": {"_get_jax_state"}}.get(
        BACKEND, set()
    )
    assert overridden == expected
    assert issubclass(keras_unikd.Distiller, keras_internals.KerasInternals)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow multi-worker workaround")
def test_tensorflow_symbolic_build_hook_is_still_there():
    # keras-team/keras#20585: Keras builds from the first batch through
    # _maybe_symbolic_build(iterator, data_batch), calling _symbolic_build,
    # and keeps the strategy of a model in _distribute_strategy.
    hook = inspect.signature(keras.Model._maybe_symbolic_build)
    assert list(hook.parameters)[:3] == ["self", "iterator", "data_batch"]
    assert "data_batch" in inspect.signature(keras.Model._symbolic_build).parameters
    inputs = keras.Input((2,))
    assert hasattr(keras.Model(inputs, inputs), "_distribute_strategy")
    from tensorflow.python.distribute.collective_all_reduce_strategy import (
        CollectiveAllReduceExtended,
    )

    assert callable(CollectiveAllReduceExtended._in_multi_worker_mode)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX state workaround")
def test_jax_state_hooks_are_still_there():
    state = inspect.signature(keras.Model._get_jax_state)
    assert "purge_model_variables" in state.parameters
    for part in (
        "trainable_variables",
        "non_trainable_variables",
        "optimizer_variables",
        "metrics_variables",
    ):
        assert part in state.parameters
    assert callable(keras.Model.jax_state_sync)
    # jax_state_sync reattaches self._jax_state, a dict of the four parts.
    source = inspect.getsource(keras.Model.jax_state_sync)
    assert "_jax_state" in source and "_jax_state_synced" in source
    assert '"trainable_variables"' in source or "'trainable_variables'" in source


def test_optimizer_variable_index_hook_is_still_there():
    # keras_unikd.TorchSGD finds a variable's momentum buffer with
    # Optimizer._get_variable_index, given the Keras variable or (TensorFlow)
    # the tf.Variable that the optimizer hands update_step.
    variables = [keras.Variable([1.0, 2.0]), keras.Variable([[3.0]])]
    optimizer = keras.optimizers.SGD()
    optimizer.build(variables)
    for index, variable in enumerate(variables):
        assert keras_internals.optimizer_variable_index(optimizer, variable) == index
        if BACKEND == "tensorflow":
            assert keras_internals.optimizer_variable_index(optimizer, variable.value) == index


