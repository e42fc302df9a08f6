"""The logits of a classifier, when its output is a softmax.

Distillation losses compare logits. Many Keras classifiers end in a softmax
instead: `keras.applications` models (`classifier_activation="softmax"` by
default), `Dense(num_classes, activation="softmax")` heads, a final
`keras.layers.Softmax()` or `keras.layers.Activation("softmax")` (the
mixed-precision guide's float32 output layer). `ModelLogits` finds such a
head and builds a model of the values that enter the softmax, from the same
layers and variables: training it trains the original model, whose outputs
stay probabilities.

What is recognised: the layer that produces the model's output is a
`keras.layers.Softmax` over the last axis, or any layer whose `activation`
attribute is `keras.activations.softmax` (`Dense`, `Conv2D`, `EinsumDense`,
`Activation`, ...), or a nested functional model whose own output is one of
these. A softmax hidden anywhere else (inside a custom layer or a `Lambda`)
is not seen here; `check_logits` finds its probabilities in the first batch
of `Distiller.fit`.
"""

import contextlib
import warnings

import keras
import numpy as np

from keras_unikd.taps import replay

_SOFTMAXES = (keras.activations.softmax, keras.ops.softmax)

_FIX = (
    "Build the network with a logits output: keras.applications models with "
    "classifier_activation=None, your own head as Dense(num_classes, "
    "activation=None) (and from_logits=True in its losses and metrics); or "
    "make the softmax the model's last layer (keras.layers.Softmax() or "
    "Activation('softmax')), which the Distiller sets aside itself."
)


@contextlib.contextmanager
def _linear_activation(layer):
    """Replaces `layer.activation` with the identity while the block runs."""
    activation = layer.activation
    layer.activation = keras.activations.linear
    try:
        yield
    finally:
        layer.activation = activation


class _WithoutActivation(keras.layers.Layer):
    """Runs `layer`'s computation, on its own variables, without its activation.

    `layer.call` runs with `layer.activation` set to the identity for the
    time of the call (at trace time in compiled steps), so no variable is
    copied and nothing is added to `layer`'s graph. It takes `layer`'s name
    and dtype policy, so a feature path naming the head reads its logits.
    """

    def __init__(self, layer):
        super().__init__(name=layer.name, dtype=layer.dtype_policy)
        self.layer = layer

    def call(self, inputs):
        with _linear_activation(self.layer):
            return self.layer.call(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def _replay_to_output(model):
    """Replays `model`'s graph, keeping the layer call that produces its output.

    Returns:
        `(inputs, layer, args)`: the replayed graph's inputs, the layer whose
        call produces the model's output and that call's positional
        arguments (tensors of the replayed graph), or `None` if no single
        layer call produces the output.
    """
    calls = []

    def record(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        calls.append((layer, args, outputs))
        return outputs

    inputs, output = replay(model, record)
    for layer, args, outputs in reversed(calls):
        if any(tensor is output for tensor in keras.tree.flatten(outputs)):
            return inputs, layer, args
    return None


def _has_graph(layer):
    """Whether `layer` is a model with a graph of layers (functional, built Sequential)."""
    if isinstance(layer, keras.Sequential):
        return layer.built
    return isinstance(layer, keras.Model) and getattr(layer, "outputs", None) is not None


def _is_class_softmax(layer, rank):
    """Whether `layer` ends in a softmax over the last axis of its rank-`rank` output."""
    if isinstance(layer, keras.layers.Softmax):
        axes = layer.axis if isinstance(layer.axis, (tuple, list)) else (layer.axis,)
        return tuple(axes) in ((-1,), (rank - 1,))
    return any(getattr(layer, "activation", None) is softmax for softmax in _SOFTMAXES)


def _pre_softmax(model):
    """`(logits model, path of the softmax layer)` for a softmax head, else `None`.

    Raises:
        ValueError: for a model that has no graph to replay (subclassed,
            unbuilt Sequential), with the fix.
    """
    output_call = _replay_to_output(model)
    if output_call is None:  # several outputs, or not one layer's
        return None
    inputs, layer, args = output_call
    if _has_graph(layer):
        nested = _pre_softmax(layer)
        if nested is None:
            return None
        logits, path = nested[0](*args), f"{layer.name}/{nested[1]}"
    elif _is_class_softmax(layer, len(model.outputs[0].shape)):
        softmax_free = isinstance(layer, keras.layers.Softmax)
        logits = args[0] if softmax_free else _WithoutActivation(layer)(args[0])
        path = layer.name
    else:
        return None
    return keras.Model(inputs, logits, name=model.name), path


class ModelLogits:
    """A classifier's logits: its output, or the input of its final softmax.

    For a model whose output is a softmax (see the module docstring),
    `logits_model` is a functional model of the same layers and variables
    that stops before the softmax; otherwise it is the model itself. A plain
    Python object, so a Keras model holding one does not track (or save)
    the logits model twice.

    Args:
        model: A functional or Sequential `keras.Model` with one output.
        role: `"teacher"` or `"student"`, for the messages.

    Attributes:
        model: The model given.
        logits_model: A model of its logits.
        softmax: Path of the softmax layer set aside (`"outer/inner"` for a
            nested model), or `None`.

    Example:

    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> probabilities = keras.layers.Dense(3, activation="softmax", name="head")(inputs)
    >>> logits = ModelLogits(keras.Model(inputs, probabilities), "teacher")
    >>> logits.softmax
    'head'
    """

    def __init__(self, model, role):
        self.model = model
        self.role = role
        head = _pre_softmax(model)
        self.logits_model, self.softmax = (model, None) if head is None else head

    def __call__(self, inputs, training=False):
        """The logits of a batch."""
        return self.logits_model(inputs, training=training)

    def warn_if_set_aside(self):
        """Says, as a `UserWarning`, that the softmax is set aside, if it is."""
        if self.softmax is None:
            return
        warnings.warn(
            f"The {self.role} {self.model.name!r} ends in a softmax (layer "
            f"{self.softmax!r}): the Distiller distils the logits that enter "
            "it. The model itself is unchanged and still outputs "
            "probabilities; the Distiller's own outputs and metrics are "
            "logits.",
            stacklevel=3,
        )


def check_logits(logits, name, role, tolerance=1e-3):
    """Raises if a batch of "logits" are class probabilities.

    Catches a softmax that `ModelLogits` cannot see (inside a custom layer
    or a `Lambda`): every value in `[0, 1]` and every row summing to 1.

    Args:
        logits: Array `(batch, num_classes)`, `num_classes >= 2`.
        name: The network's name, for the message.
        role: `"teacher"` or `"student"`, for the message.
        tolerance: How far from 1 a row's sum may be.

    Raises:
        ValueError: naming the network and the fix.
    """
    logits = np.asarray(logits, dtype="float64")
    if logits.ndim != 2 or logits.shape[-1] < 2 or not logits.size:
        return
    in_unit_range = np.all((logits >= 0) & (logits <= 1))
    if in_unit_range and np.all(np.abs(logits.sum(axis=-1) - 1) <= tolerance):
        raise ValueError(
            f"The {role} {name!r} outputs probabilities, not logits: in the "
            "first batch every output is in [0, 1] and each example's outputs "
            "sum to 1, so a softmax is applied inside the model (a custom "
            "layer or a Lambda?) where the Distiller cannot set it aside. "
            f"Distilling probabilities as logits learns next to nothing. {_FIX}"
        )
