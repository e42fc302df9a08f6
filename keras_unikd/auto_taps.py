"""Automatic feature taps: the stage ends and the pooled vector of a model.

`teacher_features="auto"` / `student_features="auto"` (the `Distiller`'s
keyword form, `terms.UniKDFeatures`) tap what `auto_feature_paths` chooses
from the model's graph:

1. The *cut points*: layers that every path from the inputs to the logits
   passes through (in a topological order of the calls, no edge jumps over
   them). Layers inside a residual block are not cut points; block outputs
   are.
2. Of those, layers called once (a shared layer's output is ambiguous),
   that do not enlarge the spatial size (`ZeroPadding2D`, up-sampling) and
   that are not noise layers (`Dropout`, `GaussianNoise`, ...: in training
   they would hand the terms a noisy feature).
3. Maps (rank 4) and token features (rank 3, read as maps by the rule of
   `keras_unikd.tokens`; tokens that fit no grid are left out) are grouped
   by their map's spatial size, in order; the last layer of each group (the
   end of a stage) is kept, for the deepest `max_stages` groups (4: an
   ImageNet stem is dropped).
4. Then the pooled vector: the last rank-2 cut point before the logits
   layer.

A nested functional model that is a cut point (a `keras.applications` or
keras-hub backbone inside a classifier) is analysed in turn, giving
`"outer/inner"` paths; a keras-hub backbone with `pyramid_outputs` gives
its pyramid levels' layers as its stages.
"""

import collections
import dataclasses
import typing

import keras

from keras_unikd.taps import PATH_SEPARATOR
from keras_unikd.taps import replay
from keras_unikd.tokens import check_token_layouts
from keras_unikd.tokens import image_size
from keras_unikd.tokens import token_layout
from keras_unikd.validation import check_positive_int

MAX_STAGES = 4
NOISE_LAYERS = (
    keras.layers.Dropout,
    keras.layers.AlphaDropout,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
)


@dataclasses.dataclass
class _Call:
    operation: object
    inputs: list
    outputs: list
    used: list = dataclasses.field(default_factory=list)  # indices of outputs read later


@dataclasses.dataclass(frozen=True)
class _Candidate:
    path: str
    size: tuple  # the map's (height, width); None for a vector


def trace_calls(model):
    """`(input tensors, calls, output tensors)` of a replay of `model`.

    The calls are in topological order, each with its operation, its
    input and output tensors (`keras_unikd.pre_activation` reads them too).
    """
    calls = []

    def record(operation, *args, **kwargs):
        outputs = operation(*args, **kwargs)
        inputs = keras.tree.flatten((args, kwargs))
        calls.append(
            _Call(
                operation,
                [tensor for tensor in inputs if isinstance(tensor, keras.KerasTensor)],
                keras.tree.flatten(outputs),
            )
        )
        return outputs

    inputs, outputs = replay(model, record)
    return keras.tree.flatten(inputs), calls, keras.tree.flatten(outputs)


def cut_points(model, outputs=None):
    """The calls of `model` that every input -> output path passes through.

    Args:
        model: A functional or built Sequential `keras.Model`.
        outputs: Indices into the model's flattened outputs: the outputs
            whose paths count (default all; a nested backbone whose
            classifier reads only its pooled output passes that one).

    Returns:
        `(cuts, calls_per_operation)`: the cut points as calls (their
        `operation`, input and output tensors in a replay of the graph) in
        topological order, the last one producing the output; and a
        `collections.Counter` of the calls of each operation, by `id`.
    """
    inputs, calls, model_outputs = trace_calls(model)
    if outputs is not None:
        model_outputs = [model_outputs[index] for index in outputs]
    reached = {id(tensor) for tensor in inputs}
    last_use = {}
    for position, call in enumerate(calls):
        used = [id(tensor) for tensor in call.inputs if id(tensor) in reached]
        if used:
            reached.update(id(tensor) for tensor in call.outputs)
            last_use.update(dict.fromkeys(used, position))
    last_use.update(dict.fromkeys((id(tensor) for tensor in model_outputs), len(calls)))
    for call in calls:
        call.used = [i for i, tensor in enumerate(call.outputs) if id(tensor) in last_use]
    # The furthest call that reads a tensor made before the current call: a
    # call is a cut point when nothing made before it is read after it.
    reach = max((last_use.get(id(tensor), -1) for tensor in inputs), default=-1)
    cuts = []
    for position, call in enumerate(calls):
        if reach <= position and any(id(tensor) in reached for tensor in call.inputs):
            cuts.append(call)
        reach = max([reach] + [last_use.get(id(tensor), -1) for tensor in call.outputs])
    return cuts, collections.Counter(id(call.operation) for call in calls)


def _map_size(path, shape, size, overrides):
    """The spatial size of a feature seen as a map; `None` if it is not one."""
    if len(shape) == 4:
        return tuple(shape[1:3]) if None not in shape[1:3] else None
    if len(shape) == 3:
        try:
            layout = token_layout(path, shape, size, overrides.get(path))
        except ValueError:
            return None  # an unknown token count
        return None if layout is None else (layout.height, layout.width)
    return None


def _enlarges(inputs, output_size, path, size, overrides):
    """Whether a call makes its input map larger (zero padding, up-sampling)."""
    if not inputs or output_size is None:
        return False
    input_size = _map_size(path, tuple(inputs[0].shape), size, overrides)
    return input_size is not None and any(
        out > before for out, before in zip(output_size, input_size)
    )


def _is_nested_graph(layer):
    return isinstance(layer, keras.Model) and (
        isinstance(layer, keras.Sequential) or getattr(layer, "outputs", None) is not None
    )


def _pyramid_candidates(model, prefix, calls_per_layer):
    """The layers of a keras-hub backbone's `pyramid_outputs`, as stages."""
    candidates = []
    for tensor in model.pyramid_outputs.values():
        for layer in model.layers:
            if calls_per_layer[id(layer)] == 1 and layer.output is tensor:
                shape = tuple(tensor.shape)
                candidates.append(_Candidate(prefix + layer.name, tuple(shape[1:3])))
                break
    return candidates


def _candidates(model, prefix, size, overrides, has_logits, outputs=None):
    """The tappable cut points of `model` (and of its nested models), in order.

    With `has_logits`, the call that produces the model's output (the logits
    layer) is not a candidate. `outputs` are the indices of the outputs
    that the enclosing graph reads (see `cut_points`).
    """
    cuts, calls_per_layer = cut_points(model, outputs)
    candidates = []
    for call in cuts:
        layer = call.operation
        if (
            not isinstance(layer, keras.layers.Layer)
            or calls_per_layer[id(layer)] != 1
            or isinstance(layer, NOISE_LAYERS)
        ):
            continue
        path = prefix + layer.name
        produces_logits = has_logits and call is cuts[-1]
        if _is_nested_graph(layer):
            # A backbone with several outputs (keras-hub's BERT: the sequence
            # and the pooled vector) is analysed towards those read here.
            candidates += _candidates(
                layer, path + PATH_SEPARATOR, size, overrides, produces_logits, call.used
            )
            continue
        if len(call.outputs) != 1:
            continue
        if produces_logits:
            continue
        shape = tuple(call.outputs[0].shape)
        if len(shape) == 2:
            candidates.append(_Candidate(path, None))
            continue
        map_size = _map_size(path, shape, size, overrides)
        if map_size is not None and not _enlarges(
            call.inputs, map_size, path, size, overrides
        ):
            candidates.append(_Candidate(path, map_size))
    if isinstance(getattr(model, "pyramid_outputs", None), dict) and model.pyramid_outputs:
        vectors = [candidate for candidate in candidates if candidate.size is None]
        candidates = _pyramid_candidates(model, prefix, calls_per_layer) + vectors
    return candidates


@dataclasses.dataclass(frozen=True)
class AutoTaps:
    """What `"auto"` taps of one model: its stage ends and its pooled vector.

    The `Distiller` gives each term whose features are `"auto"` one per
    network (`DistillationTerm.choose_auto_features`), and the term keeps
    the layers its method reads: every stage and the pooled vector (UniKD),
    the stages (AT), the last stage (SP), the pooled vector (PKT, RKD).

    Attributes:
        stages: Layer paths of the stage ends, shallow to deep.
        pooled: The pooled vector's layer path, or `None` when the model
            has none.
        model: The model the paths are in (`None` when not given), for
            terms that read its graph to choose (OFD: the input of each
            stage end's ReLU); not shown, not compared.

    Example:

    >>> taps = AutoTaps(stages=("stage1", "stage2"), pooled="pool")
    >>> taps.paths, taps.deepest(1)
    (('stage1', 'stage2', 'pool'), ('stage2',))
    """

    stages: typing.Tuple[str, ...]
    pooled: typing.Optional[str] = None
    model: typing.Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def paths(self):
        """Every layer: the stages, then the pooled vector."""
        return self.stages + ((self.pooled,) if self.pooled else ())

    def deepest(self, count):
        """The `count` deepest stage ends (fewer when the model has fewer)."""
        return self.stages[-count:] if count else ()

    def pooled_or_deepest(self):
        """`(pooled vector,)`, or the deepest stage end when there is none
        (a term that reads pooled features averages its map)."""
        return (self.pooled,) if self.pooled else self.deepest(1)

    def require(self, what, term):
        """`self`, or a `ValueError` when the model has no `what` ("stages"/"pooled")."""
        if not getattr(self, what):
            raise ValueError(
                f"{term} reads the {'pooled vector' if what == 'pooled' else 'stage maps'} "
                f"of each network, but automatic taps found none (they found "
                f"{list(self.paths)}). Give the layer names instead of 'auto'."
            )
        return self


def auto_taps(model, max_stages=MAX_STAGES, token_layouts=None):
    """`auto_feature_paths`'s choice as an `AutoTaps`: stage ends and pooled vector.

    Example:

    >>> import keras
    >>> inputs = keras.Input((16, 16, 3))
    >>> x = keras.layers.Conv2D(8, 3, padding="same", name="stage1")(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    >>> auto_taps(keras.Model(inputs, keras.layers.Dense(10)(x)))
    AutoTaps(stages=('stage1',), pooled='pool')
    """
    stages, pooled = _choose(model, max_stages, token_layouts)
    return AutoTaps(stages=tuple(stages), pooled=pooled, model=model)


def auto_feature_paths(model, max_stages=MAX_STAGES, token_layouts=None):
    """The layers `"auto"` taps: the ends of the deepest stages, the pooled vector.

    See the module docstring for the rule.

    Args:
        model: A functional or built Sequential `keras.Model` whose single
            output is the logits.
        max_stages: The number of deepest spatial resolutions kept.
        token_layouts: Optional `{layer path: layout}` overrides for token
            features (see `keras_unikd.tokens`).

    Returns:
        A list of layer paths, shallow to deep: one per resolution, then the
        pooled vector.

    Raises:
        ValueError: when no layer qualifies (tap layer names instead).

    Example:

    >>> import keras
    >>> inputs = keras.Input((16, 16, 3))
    >>> x = keras.layers.Conv2D(8, 3, padding="same", name="stage1")(inputs)
    >>> x = keras.layers.Conv2D(16, 3, strides=2, name="stage2")(x)
    >>> x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(10)(x))
    >>> auto_feature_paths(model)
    ['stage1', 'stage2', 'pool']
    """
    stages, pooled = _choose(model, max_stages, token_layouts)
    return stages + ([pooled] if pooled else [])


def _choose(model, max_stages, token_layouts):
    """`(stage end paths, pooled path or None)`; a `ValueError` when there are none."""
    check_positive_int("max_stages", max_stages)
    overrides = check_token_layouts(token_layouts)
    candidates = _candidates(model, "", image_size(model), overrides, has_logits=True)
    stage_ends = []
    for candidate in candidates:
        if candidate.size is None:
            continue
        if stage_ends and stage_ends[-1].size == candidate.size:
            stage_ends[-1] = candidate
        else:
            stage_ends.append(candidate)
    stages = [candidate.path for candidate in stage_ends[-max_stages:]]
    vectors = [candidate.path for candidate in candidates if candidate.size is None]
    if not stages and not vectors:
        raise ValueError(
            f"Found no layer of model {model.name!r} to tap automatically: no "
            "map, token feature or pooled vector that every path to the "
            "logits passes through and that is called once. Give layer "
            "names (teacher_features=[...], student_features=[...])."
        )
    return stages, (vectors[-1] if vectors else None)
