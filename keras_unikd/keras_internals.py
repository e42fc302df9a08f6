"""The only place where keras_unikd touches private Keras internals.

Each use works around a named Keras bug or a missing public name;
`tests/test_keras_internals.py` fails when Keras changes under it (checked
on Keras 3.12 - 3.15; the optimizer hook on 3.15). Everything
else in the package uses public Keras API: the `Distiller` overrides
`compute_loss` and `compute_metrics` and keeps Keras's own `train_step` /
`test_step` on every backend.

- TensorFlow, `MultiWorkerMirroredStrategy` (keras-team/keras#20585): Keras
  averages each per-replica log over axis 0, which a scalar lacks, and its
  symbolic build reduces the first batch across replicas, which fails.
  `reducible_logs` gives scalars that axis; `_maybe_symbolic_build` builds
  from one local replica's batch.
- JAX: while `fit`/`evaluate`/`predict` run, Keras detaches the variables'
  values and reattaches them from `self._jax_state`, which it sets only once
  a step has completed; a first step that fails while tracing (a label-shape
  `ValueError`, say) would leave the model without weights. The override of
  `_get_jax_state` records the state before the step so that
  `jax_state_sync` reattaches it (`fit` already does; `evaluate` and
  `predict` are wrapped to do so).
- Optimizers (not a bug: Keras has no public name for it): a custom
  optimizer finds a variable's slot (its momentum buffer, say) with
  `Optimizer._get_variable_index`, as the `keras.optimizers.Optimizer`
  docstring's own example does; `optimizer_variable_index` wraps it. It also
  knows the variable when TensorFlow hands `update_step` the `tf.Variable`
  or a per-replica copy under a distribution strategy.
"""


import keras

BACKEND = keras.backend.backend()


def optimizer_variable_index(optimizer, variable):
    """Position of `variable` in the list `optimizer` was built on."""
    return optimizer._get_variable_index(variable)


def _identity(logs):
    return logs


if BACKEND == "tensorflow":
    import tensorflow as tf

    def _in_multi_worker_mode():
        strategy = tf.distribute.get_strategy()
        return (
            isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()
        )

    def reducible_logs(logs):
        """Logs that Keras can average over the replicas of any strategy."""
        if not _in_multi_worker_mode():
            return logs
        return {name: tf.reshape(value, (1,)) for name, value in logs.items()}

    def _first_local_replica(strategy, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    class KerasInternals:
        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            """Keras's, reading the first batch from one local replica."""
            if self._distribute_strategy is None:
                return
            strategy = self.distribute_strategy
            if iterator is not None:
                for _, _, batches in iterator:
                    data_batch = keras.tree.map_structure(
                        lambda value: _first_local_replica(strategy, value),
                        next(batches),
                    )
                    break
            with strategy.scope():
                self._symbolic_build(data_batch=data_batch)

elif BACKEND == "jax":
    reducible_logs = _identity

    _STATE_PARTS = (
        "trainable_variables",
        "non_trainable_variables",
        "optimizer_variables",
        "metrics_variables",
    )

    class KerasInternals:
        def _get_jax_state(self, purge_model_variables=False, **parts):
            """Keras's, keeping a purged state where a failure can restore it."""
            state = super()._get_jax_state(purge_model_variables=purge_model_variables, **parts)
            if purge_model_variables:
                names = [name for name in _STATE_PARTS if parts.get(name)]
                self._jax_state = dict(zip(names, state))
                self._jax_state_synced = False
            return state

        def evaluate(self, *args, **kwargs):
            try:
                return super().evaluate(*args, **kwargs)
            except BaseException:
                self.jax_state_sync()
                raise

        def predict(self, *args, **kwargs):
            try:
                return super().predict(*args, **kwargs)
            except BaseException:
                self.jax_state_sync()
                raise

else:
    reducible_logs = _identity

    class KerasInternals:
        pass
