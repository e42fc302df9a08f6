"""JAX train and test steps of the Distiller (pure functions of the state)."""

import jax
from keras import StatelessScope
from keras.utils import unpack_x_y_sample_weight


def _run_stateless(variables, values, function, *args, **kwargs):
    """Calls `function` with `variables` bound to `values`.

    Returns the function's result and the variables' values afterwards
    (batch-norm statistics, seed-generator states and metric accumulators
    assigned inside the call). Losses added with `add_loss` during the call
    are collected so that `layer.losses` sees them.
    """
    mapping = list(zip(variables, values))
    with StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        result = function(*args, **kwargs)
    new_values = [scope.get_current_value(variable) for variable in variables]
    return result, new_values


_STATE_PARTS = (
    "trainable_variables",
    "non_trainable_variables",
    "optimizer_variables",
    "metrics_variables",
)


class JaxDistillerSteps:
    def _get_jax_state(self, purge_model_variables=False, **parts):
        """Keras's, keeping a purged state where a failure can restore it.

        While `fit`/`evaluate`/`predict` run, Keras detaches the values of
        the variables and reattaches them from `self._jax_state`, which it
        sets only once a step has completed. A first step that fails (a
        label-shape `ValueError` raised while tracing, say) would leave the
        Distiller without weights. Recording the state before the step lets
        `jax_state_sync` reattach it.
        """
        state = super()._get_jax_state(purge_model_variables=purge_model_variables, **parts)
        if purge_model_variables:
            names = [name for name in _STATE_PARTS if parts.get(name)]
            self._jax_state = dict(zip(names, state))
            self._jax_state_synced = False
        return state

    def evaluate(self, *args, **kwargs):
        # Keras's JAX evaluate (unlike fit) does not reattach the state
        # when it fails.
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

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_state, metrics_state = state
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        model_variables = self.trainable_variables + self.non_trainable_variables

        def loss_fn(trainable, non_trainable):
            outputs, values = _run_stateless(
                model_variables,
                [*trainable, *non_trainable],
                self.compute_distillation_losses,
                x,
                y,
                sample_weight,
                training=True,
            )
            # The loss scale of a LossScaleOptimizer (mixed_float16) is an
            # optimizer variable: read it from the state, not the model.
            scaled, _ = _run_stateless(
                self.optimizer.variables,
                optimizer_state,
                self.optimizer.scale_loss,
                outputs[0],
            )
            return scaled, (outputs, values[len(trainable) :])

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, (outputs, non_trainable)), grads = grad_fn(trainable, non_trainable)
        trainable, optimizer_state = self.optimizer.stateless_apply(
            optimizer_state, grads, trainable
        )
        total, terms, student_logits = outputs
        logs, metrics_state = _run_stateless(
            self.metrics_variables,
            metrics_state,
            self.update_train_metrics,
            total,
            terms,
            y,
            student_logits,
            sample_weight,
        )
        return logs, (trainable, non_trainable, optimizer_state, metrics_state)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_state = state
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        model_variables = self.trainable_variables + self.non_trainable_variables
        (loss, student_logits), values = _run_stateless(
            model_variables,
            [*trainable, *non_trainable],
            self.compute_student_loss,
            x,
            y,
            sample_weight,
        )
        logs, metrics_state = _run_stateless(
            self.metrics_variables,
            metrics_state,
            self.update_test_metrics,
            loss,
            y,
            student_logits,
            sample_weight,
        )
        return logs, (trainable, values[len(trainable) :], metrics_state)
