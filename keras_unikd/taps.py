"""Feature taps: one forward pass that returns logits and named intermediate outputs.

A tap rewires an existing functional (or Sequential) Keras model, reusing its
layers and weights, into a model whose outputs are the original outputs plus
the outputs of the requested layers. A path `"backbone/stage_1"` reaches a
layer inside a nested model (e.g. a keras-cv backbone inside a classifier),
at any depth. Token features `(batch, tokens, channels)` come out as
channels-last maps (`keras_unikd.tokens`), so every term sees maps or
vectors.
"""

import keras

from keras_unikd.tokens import check_token_layouts
from keras_unikd.tokens import image_size
from keras_unikd.tokens import no_grid_message
from keras_unikd.tokens import token_layout

PATH_SEPARATOR = "/"


def _split_paths(paths):
    """Groups paths into direct layer names and `{child: [sub-paths]}`."""
    direct, nested = [], {}
    for path in paths:
        head, _, rest = path.partition(PATH_SEPARATOR)
        if rest:
            nested.setdefault(head, []).append(rest)
        else:
            direct.append(head)
    return direct, nested


def _check_layer_exists(model, name, full_path):
    names = [layer.name for layer in model.layers]
    if name not in names:
        nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
        hint = (
            f" To reach inside a nested model, use 'model_name/layer_name' "
            f"(nested models here: {nested})."
            if nested
            else ""
        )
        raise ValueError(
            f"No layer named {name!r} (from path {full_path!r}) in model "
            f"{model.name!r}. Available layers: {names}. A model holds only "
            "the layers on the path from its inputs to its outputs: tap a "
            f"layer that the logits depend on.{hint}"
        )
    return model.get_layer(name)


def _check_tappable(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a keras.Model, got {type(model).__name__}. Build the "
            "network with the functional API or keras.Sequential."
        )
    # Functional and built Sequential models expose their graph's outputs; a
    # subclassed model has none.
    if not isinstance(model, keras.Sequential) and getattr(model, "outputs", None) is None:
        raise ValueError(
            f"Model {model.name!r} is a subclassed model: it has no graph of "
            "layers, so neither its input shape nor its intermediate outputs "
            "can be read. Build it with the functional API or "
            "keras.Sequential; for its logits alone (no tapped features), "
            "wrap it: inputs = keras.Input(shape); "
            "model = keras.Model(inputs, subclassed(inputs))."
        )
    if isinstance(model, keras.Sequential) and not model.built:
        raise ValueError(
            f"Sequential model {model.name!r} is not built. Give its first "
            "layer an input shape (keras.Input) or call model.build(shape)."
        )


class _Recorder:
    """Intercepts layer calls while a model's graph is replayed."""

    def __init__(self, model, paths, prefix):
        direct, nested = _split_paths(paths)
        self.model = model
        self.prefix = prefix
        self.direct = {
            name: _check_layer_exists(model, name, prefix + name) for name in direct
        }
        self.nested_taps = {}
        for child_name, child_paths in nested.items():
            child = _check_layer_exists(model, child_name, prefix + child_name)
            if not isinstance(child, keras.Model):
                raise ValueError(
                    f"Layer {prefix + child_name!r} is a "
                    f"{type(child).__name__}, not a nested model, so the path "
                    f"{prefix + child_name + PATH_SEPARATOR + child_paths[0]!r} "
                    "cannot go inside it."
                )
            self.nested_taps[child_name] = (
                child_paths,
                _tap_model(child, child_paths, prefix + child_name + PATH_SEPARATOR),
            )
        self.recorded = {}

    def _record(self, path, value):
        if path in self.recorded:
            raise ValueError(
                f"Layer {path!r} is called more than once in model "
                f"{self.model.name!r}, so its output is ambiguous. Tap a layer "
                "that is used once."
            )
        self.recorded[path] = value

    def __call__(self, layer, *args, **kwargs):
        if layer.name in self.nested_taps:
            child_paths, child_tap = self.nested_taps[layer.name]
            original, *features = child_tap(*args, **kwargs)
            for child_path, feature in zip(child_paths, features):
                self._record(layer.name + PATH_SEPARATOR + child_path, feature)
            return original
        outputs = layer(*args, **kwargs)
        if layer.name in self.direct:
            self._record(layer.name, outputs)
        return outputs

    def features(self, paths):
        missing = [path for path in paths if path not in self.recorded]
        if missing:
            raise ValueError(
                f"Layer(s) {[self.prefix + path for path in missing]} of model "
                f"{self.model.name!r} are not on the path from the model's "
                "inputs to its outputs, so tapping them would need a second "
                "forward pass. Tap layers that the outputs depend on."
            )
        return [self.recorded[path] for path in paths]


def replay(model, call_function):
    """Runs a model's graph on new symbolic inputs, reusing its layers.

    Every operation call of the graph, in a topological order, goes through
    `call_function(operation, *args, **kwargs)`, which must return the
    call's outputs; a nested model is one call.

    Args:
        model: A tappable functional or built Sequential `keras.Model`.
        call_function: The callable above.

    Returns:
        `(inputs, outputs)`: the new input and output tensors (a tensor when
        there is one, else a list).
    """
    _check_tappable(model)
    if isinstance(model, keras.Sequential):
        first_input = model.inputs[0]
        inputs = keras.Input(batch_shape=first_input.shape, dtype=first_input.dtype)
        outputs = inputs
        for layer in model.layers:
            outputs = call_function(layer, outputs)
        return inputs, outputs
    replayed = keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=call_function
    )
    inputs, outputs = replayed.inputs, replayed.outputs
    return (
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
    )


def _tap_model(model, paths, prefix=""):
    """A model with outputs `[original outputs, *features in `paths` order]`."""
    _check_tappable(model)
    recorder = _Recorder(model, paths, prefix)
    inputs, outputs = replay(model, recorder)
    return keras.Model(
        inputs, [outputs, *recorder.features(paths)], name=f"{model.name}_tap"
    )


class FeatureTap:
    """Runs a model once and returns its logits and the named features.

    Token features `(batch, tokens, channels)` are returned as channels-last
    maps `(batch, h, w, channels)`, by the rule of `keras_unikd.tokens`
    (image models: prefix tokens set aside, the rest on the input's patch
    grid; other models: an `(L, 1)` sequence) or by `token_layouts`.

    Args:
        model: A built functional or Sequential `keras.Model` whose single
            output is the logits.
        feature_paths: Layer names, shallow to deep; `"outer/inner"` reaches
            layer `inner` of the nested model `outer`.
        token_layouts: Optional `{layer path: "grid" | "sequence" |
            (prefix_tokens, height, width)}` for token features whose map
            the rule does not give.

    Attributes:
        feature_shapes: The shapes of the features as returned (maps for
            token features).
        token_layouts: `{layer path: TokenLayout}` of the token features.
        token_report: One readable line per token feature whose layout
            the rule chose (not an override).

    Raises:
        ValueError: for an unknown layer name (the message lists the layers
            that exist), a layer not on the path to the outputs, a layer
            called more than once, a subclassed model, a token feature that
            fits no grid (the message gives the override), or a layout for
            a layer that is not a tapped token feature.

    Example:

    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> hidden = keras.layers.Conv2D(4, 3, name="stage1")(inputs)
    >>> pooled = keras.layers.GlobalAveragePooling2D(name="pool")(hidden)
    >>> model = keras.Model(inputs, keras.layers.Dense(10)(pooled))
    >>> tap = FeatureTap(model, ["stage1", "pool"])
    >>> [tuple(shape) for shape in tap.feature_shapes]
    [(None, 6, 6, 4), (None, 4)]
    """

    def __init__(self, model, feature_paths=(), token_layouts=None):
        self.model = model
        self.feature_paths = tuple(feature_paths)
        overrides = check_token_layouts(token_layouts)
        _check_tappable(model)
        if len(model.outputs) != 1:
            raise ValueError(
                f"Model {model.name!r} has {len(model.outputs)} outputs; a "
                "distillation tap needs exactly one output, the logits."
            )
        untapped = [path for path in overrides if path not in self.feature_paths]
        if untapped:
            raise ValueError(
                f"Token layouts are given for {untapped}, which model "
                f"{model.name!r} does not tap (tapped: {list(self.feature_paths)}). "
                "Remove them or tap those layers."
            )
        if self.feature_paths:
            self.tap_model = _tap_model(model, self.feature_paths)
            self.logits_shape = tuple(self.tap_model.outputs[0].shape)
            raw_shapes = [tuple(output.shape) for output in self.tap_model.outputs[1:]]
        else:
            self.tap_model = model
            self.logits_shape = tuple(model.outputs[0].shape)
            raw_shapes = []
        self.token_layouts = {}
        self.token_report = []
        size = image_size(model)
        for path, shape in zip(self.feature_paths, raw_shapes):
            if len(shape) != 3:
                if path in overrides:
                    raise ValueError(
                        f"A token layout is given for layer {path!r}, but it "
                        f"outputs shape {shape}, not tokens (batch, tokens, "
                        "channels). Remove it."
                    )
                continue
            layout = token_layout(path, shape, size, overrides.get(path))
            if layout is None:
                raise ValueError(no_grid_message(path, shape, size))
            self.token_layouts[path] = layout
            if path not in overrides:
                self.token_report.append(f"{path!r} {shape}: {layout.describe(shape)}")
        self.feature_shapes = [
            self.token_layouts[path].map_shape(shape) if path in self.token_layouts else shape
            for path, shape in zip(self.feature_paths, raw_shapes)
        ]

    def __call__(self, inputs, training=False):
        """Returns `(logits, [features])` from one forward pass."""
        if not self.feature_paths:
            return self.tap_model(inputs, training=training), []
        logits, *features = self.tap_model(inputs, training=training)
        return logits, [
            self.token_layouts[path].to_map(feature) if path in self.token_layouts else feature
            for path, feature in zip(self.feature_paths, features)
        ]
