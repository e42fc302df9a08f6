"""What comes before a ReLU in a functional model's graph, for OFD.

Overhaul feature distillation (`keras_unikd.terms.OverhaulFeatureDistillation`)
reads each network's features *before* their ReLU, and a margin per channel
from the teacher's batch normalisation that produces them. Two questions
about a model's graph, answered from a replay of it (`keras_unikd.taps`,
public Keras API only):

- `batch_norm_before(model, path)`: the `BatchNormalization` whose
  statistics describe the pre-ReLU tensor of layer `path`: the layer itself,
  or, for a residual `Add`, the normalisation ending its residual branch
  (the `Add` input with the longest path from the model's inputs), as the
  reference's `get_bn_before_relu` picks a ResNet block's `bn2` / `bn3`.
- `relu_input_path(model, path)`: for a stage end that is a plain ReLU
  layer, the path of the layer whose output the ReLU reads.
"""

import collections
import dataclasses

import keras

from keras_unikd.auto_taps import trace_calls
from keras_unikd.taps import PATH_SEPARATOR

PREACT_HINT = (
    "Tap a `*_preact` layer of a model with batch normalisation before its ReLU "
    "(keras_unikd.models name them `stage1_preact`, `stage2_preact`, ...)."
)


@dataclasses.dataclass(frozen=True)
class _Graph:
    calls: dict  # id(operation) -> its calls in the replay
    producer: dict  # id(tensor) -> the call that made it
    depth: dict  # id(tensor) -> calls on the longest path from an input
    tensors: list  # keeps the tensors alive, so that their ids stay unique


def _graph(model):
    inputs, calls, outputs = trace_calls(model)
    depth = {id(tensor): 0 for tensor in inputs}
    producer, by_operation = {}, collections.defaultdict(list)
    for call in calls:
        level = 1 + max((depth.get(id(tensor), 0) for tensor in call.inputs), default=0)
        by_operation[id(call.operation)].append(call)
        for tensor in call.outputs:
            producer[id(tensor)] = call
            depth[id(tensor)] = level
    return _Graph(dict(by_operation), producer, depth, [inputs, calls, outputs])


def _locate(model, path):
    """`(the model holding the layer, the layer)` of an `"outer/inner"` path."""
    *outer, name = path.split(PATH_SEPARATOR)
    for head in outer:
        model = model.get_layer(head)
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"Layer {head!r} of path {path!r} is a {type(model).__name__}, not a "
                "nested model. Give a path to a layer."
            )
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise ValueError(
            f"No layer named {name!r} (from path {path!r}) in model {model.name!r}. "
            f"Give one of its layers: {names}."
        )
    return model, model.get_layer(name)


def _only_call(graph, layer, path):
    calls = graph.calls.get(id(layer), [])
    if len(calls) != 1:
        raise ValueError(
            f"Layer {path!r} is called {len(calls)} times in its model, so the "
            "tensor before it is ambiguous. Tap a layer that is called once."
        )
    return calls[0]


def _layer_making(graph, tensor):
    """The layer whose call made `tensor`, or `None` (a model input, a raw op)."""
    call = graph.producer.get(id(tensor))
    if call is None or not isinstance(call.operation, keras.layers.Layer):
        return None
    return call.operation


def _residual_branch(graph, call, path):
    """The input of an `Add` call with the longest path from the model's inputs."""
    ranked = sorted(call.inputs, key=lambda tensor: graph.depth.get(id(tensor), 0))
    if len(ranked) > 1 and graph.depth[id(ranked[-1])] == graph.depth[id(ranked[-2])]:
        raise ValueError(
            f"The residual Add {path!r} has two inputs of the same depth, so its "
            "residual branch is ambiguous. Tap the BatchNormalization ending the "
            "branch whose statistics give the margins."
        )
    return ranked[-1]


def batch_norm_before(model, path):
    """The `BatchNormalization` layer that produces (or feeds) layer `path`'s output.

    Args:
        model: A functional `keras.Model`.
        path: A layer path of `model` (`"outer/inner"` inside nested models).

    Returns:
        The layer itself when it is a `BatchNormalization`; for a residual
        `keras.layers.Add`, the `BatchNormalization` that makes its deepest
        input (the residual branch).

    Raises:
        ValueError: when there is no such layer.

    Example:

    >>> import keras
    >>> inputs = keras.Input((8, 8, 4))
    >>> branch = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    >>> branch = keras.layers.BatchNormalization(name="bn2")(branch)
    >>> preact = keras.layers.Add(name="preact")([branch, inputs])
    >>> model = keras.Model(inputs, keras.layers.ReLU()(preact))
    >>> batch_norm_before(model, "preact").name
    'bn2'
    """
    inner, layer = _locate(model, path)
    if isinstance(layer, keras.layers.BatchNormalization):
        return layer
    if isinstance(layer, keras.layers.Add):
        graph = _graph(inner)
        branch = _residual_branch(graph, _only_call(graph, layer, path), path)
        found = _layer_making(graph, branch)
        if isinstance(found, keras.layers.BatchNormalization):
            return found
    raise ValueError(
        f"Layer {path!r} ({type(layer).__name__}) has no batch-normalisation statistics "
        "before it: it is neither a BatchNormalization nor a residual Add whose residual "
        f"branch ends in one. {PREACT_HINT}"
    )


def is_relu(layer):
    """Whether `layer` is a plain ReLU: `ReLU()` or `Activation("relu")`."""
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is None and not layer.negative_slope and not layer.threshold
    return isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.relu


def relu_input_path(model, path):
    """The path of the layer whose output the ReLU layer `path` reads.

    Args:
        model: A functional `keras.Model`.
        path: A layer path of `model`, a `ReLU()` or `Activation("relu")`.

    Returns:
        The input layer's path (in the same nested model as `path`).

    Raises:
        ValueError: when `path` is not a plain ReLU layer called once (a
            convolution with `activation="relu"` has no pre-ReLU output), or
            its input is not the output of a layer called once.

    Example:

    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="stage1_preact")(x)
    >>> x = keras.layers.ReLU(name="stage1")(x)
    >>> relu_input_path(keras.Model(inputs, x), "stage1")
    'stage1_preact'
    """
    inner, layer = _locate(model, path)
    if not is_relu(layer):
        raise ValueError(
            f"Layer {path!r} ({type(layer).__name__}) is not a ReLU layer, so its "
            f"pre-ReLU tensor cannot be told from the graph. {PREACT_HINT}"
        )
    graph = _graph(inner)
    (tensor,) = _only_call(graph, layer, path).inputs
    source = _layer_making(graph, tensor)
    if source is None or len(graph.calls[id(source)]) != 1:
        raise ValueError(
            f"The input of ReLU layer {path!r} is not the output of a layer called once, "
            f"so it cannot be tapped. {PREACT_HINT}"
        )
    return path[: len(path) - len(layer.name)] + source.name
