"""Optimizers that reproduce the reference (PyTorch) training."""

import warnings

import keras
from keras import ops

from keras_unikd.keras_internals import optimizer_variable_index
from keras_unikd.validation import check_bool
from keras_unikd.validation import check_non_negative


@keras.saving.register_keras_serializable(package="keras_unikd")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with momentum in PyTorch's form (`torch.optim.SGD`, dampening 0).

    For each variable `w` with gradient `grad` and learning rate `lr`:

    ```python
    g = grad + l2_decay * w        # coupled weight decay (L2)
    buf = momentum * buf + g       # buf starts at 0, so the first buf is g
    step = g + momentum * buf if nesterov else buf
    w = w - lr * step
    ```

    The learning rate multiplies the buffer at every step, so a step decay
    of the rate (x0.1 at an epoch) acts at once, as in the KD recipes that
    were tuned with PyTorch. `keras.optimizers.SGD` folds the rate into its
    velocity instead (`v = momentum * v - lr * grad; w = w + v`): after a
    drop, the velocity still carries steps taken at the old rate and decays
    to the new one over about `1 / (1 - momentum)` steps (10 at 0.9). At a
    constant rate the two are the same.

    Weight decay: `l2_decay` is PyTorch's `SGD(weight_decay=...)`, added to
    the gradient before momentum, for every variable. Keras's own
    `weight_decay` argument is decoupled (it shrinks the weights apart from
    the gradient, which with momentum 0.9 decays about 10x less) and is
    refused here, as is `exclude_from_weight_decay`, so that neither is
    mistaken for the other: write `TorchSGD(l2_decay=5e-4)` where PyTorch
    has `SGD(weight_decay=5e-4)`.

    Works with any learning rate (float, `LearningRateSchedule`, callable),
    on the TensorFlow, JAX and PyTorch backends, compiled or eager, and with
    the base optimizer's options (`clipnorm`, `global_clipnorm`, `use_ema`,
    `loss_scale_factor`, `gradient_accumulation_steps`, ...). Its state is
    one momentum buffer per variable (none when `momentum` is 0).

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` or a callable
            taking no arguments. Defaults to `0.01`.
        momentum: Non-negative float. Defaults to `0.0` (plain SGD).
        nesterov: Whether to use Nesterov momentum, as PyTorch computes it
            (`step = g + momentum * buf`). Needs `momentum > 0`.
        l2_decay: Non-negative float, PyTorch's coupled `weight_decay`.
            Defaults to `0.0`.
        name: Name of the optimizer. Defaults to `"torch_sgd"`.
        **kwargs: Other base `keras.optimizers.Optimizer` arguments
            (`clipnorm`, `use_ema`, ...), not `weight_decay`.

    Example:

    >>> import numpy as np
    >>> optimizer = TorchSGD(learning_rate=0.1, momentum=0.9, l2_decay=0.01)
    >>> w = keras.Variable(np.array([1.0, -1.0], "float32"))
    >>> optimizer.apply([np.array([0.5, 0.5], "float32")], [w])
    >>> [round(float(v), 4) for v in keras.ops.convert_to_numpy(w)]  # w - 0.1 (g + 0.01 w)
    [0.949, -1.049]
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        l2_decay=0.0,
        name="torch_sgd",
        **kwargs,
    ):
        if kwargs.pop("weight_decay", None):
            raise ValueError(
                "TorchSGD does not take Keras's decoupled `weight_decay` (which shrinks "
                "the weights apart from the gradient). For PyTorch's "
                "SGD(weight_decay=wd), added to the gradient before momentum, pass "
                "`l2_decay=wd`; for decoupled decay use keras.optimizers.SGD or AdamW."
            )
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(check_non_negative("momentum", momentum))
        self.l2_decay = float(check_non_negative("l2_decay", l2_decay))
        check_bool("nesterov", nesterov)
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0 (as in PyTorch).")
        self.nesterov = nesterov

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentum_buffers = []
        if self.momentum != 0:
            self.momentum_buffers = self.add_optimizer_variables(variables, "momentum_buffer")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        if self.l2_decay:
            gradient = ops.add(gradient, ops.multiply(ops.cast(self.l2_decay, dtype), variable))
        step = gradient
        if self.momentum != 0:
            momentum = ops.cast(self.momentum, dtype)
            buffer = self.momentum_buffers[optimizer_variable_index(self, variable)]
            new_buffer = ops.add(ops.multiply(buffer, momentum), gradient)
            self.assign(buffer, new_buffer)
            if self.nesterov:
                step = ops.add(gradient, ops.multiply(new_buffer, momentum))
            else:
                step = new_buffer
        self.assign_sub(variable, ops.multiply(step, learning_rate))

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        raise ValueError(
            "TorchSGD applies `l2_decay` to every variable, as torch.optim.SGD with "
            "one parameter group, and has no decoupled `weight_decay` to exclude from."
        )

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update(
            {"momentum": self.momentum, "nesterov": self.nesterov, "l2_decay": self.l2_decay}
        )
        return config


@keras.saving.register_keras_serializable(package="keras_unikd")
class CoupledWeightDecaySGD(keras.optimizers.SGD):
    """Deprecated: use `TorchSGD`. Kept so that files saved with it still load.

    `keras.optimizers.SGD` (Keras's momentum form) with PyTorch's coupled
    weight decay added to the gradient. Before `TorchSGD`, the presets used
    it; a model saved then names it, and resumes with the same update as
    before.

    Args:
        l2_decay: The coupled weight decay.
        **kwargs: `keras.optimizers.SGD` arguments.
    """

    def __init__(self, l2_decay=0.0, **kwargs):
        warnings.warn(
            "CoupledWeightDecaySGD is deprecated: use keras_unikd.TorchSGD, whose "
            "momentum follows PyTorch's form (a learning-rate drop acts at once).",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(**kwargs)
        self.l2_decay = float(l2_decay)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2_decay:
            gradient = ops.add(
                ops.cast(gradient, variable.dtype),
                ops.multiply(ops.cast(self.l2_decay, variable.dtype), variable),
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["l2_decay"] = self.l2_decay
        return config
