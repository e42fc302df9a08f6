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


class JaxDistillerSteps:
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
            total = outputs[0]
            return self.optimizer.scale_loss(total), (outputs, values[len(trainable) :])

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
