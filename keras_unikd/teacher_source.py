"""Where a Distiller gets the teacher's outputs: the frozen teacher, or a cache.

A *teacher source* gives, for the views of a batch, what the terms read of
the teacher (their combined `keras_unikd.terms.TeacherNeeds`), one dict per
view: `{"logits": (batch, classes), "features": {layer path: tensor}}`, each
feature whole (a map) or reduced as the terms declare it (`"pooled"`:
`keras_unikd.layers.pooling.global_pool`, a `(batch, C)` vector). Two
sources:

- `OnlineTeacher` runs the frozen teacher, in inference mode and under
  stop-gradient, once per step on all the views of the batch;
- `CachedTeacher` reads the outputs that the batch itself carries, as a
  teacher-output cache's pipeline (`keras_unikd.cache.cached_teacher_pipeline`)
  yields them: `({"inputs": views, "cached_teacher": {view: outputs}},
  labels)`. It holds no teacher model, only what the terms are built from
  (the class count and the tapped features' shapes), so a Distiller trains
  from a cache without loading the teacher.

`TeacherOutputs` computes those outputs from the teacher model: the online
source runs it every step and the cache builder once per stored view, so both
sides hand the terms the same values. An `OnlineTeacher` also reads a batch
that carries cached outputs (and then does not run the teacher).

Example:

>>> import keras
>>> from keras_unikd.terms import TeacherNeeds
>>> inputs = keras.Input((8, 8, 3))
>>> stage1 = keras.layers.Conv2D(4, 3, name="stage1")(inputs)
>>> pooled = keras.layers.GlobalAveragePooling2D()(stage1)
>>> teacher = keras.Model(inputs, keras.layers.Dense(5)(pooled))
>>> outputs = TeacherOutputs(teacher, TeacherNeeds(logits=True, pooled_features=("stage1",)))
>>> out = outputs(keras.random.uniform((2, 8, 8, 3)))
>>> tuple(out["logits"].shape), tuple(out["features"]["stage1"].shape)
((2, 5), (2, 4))
>>> outputs.feature_shapes
{'stage1': (None, 6, 6, 4)}
"""

import keras
import numpy as np
from keras import ops

from keras_unikd.heads import ModelLogits
from keras_unikd.layers.pooling import global_pool
from keras_unikd.taps import FeatureTap

#: The keys of a batch that carries the teacher's outputs: `x = {INPUTS: the
#: views, CACHED_TEACHER: {view: outputs}}`.
INPUTS = "inputs"
CACHED_TEACHER = "cached_teacher"
#: The key of each example's row in the training set, for terms that read it
#: (`x = {INPUTS: the views, EXAMPLE_INDEX: int32 (batch,)}`, with or
#: without CACHED_TEACHER).
EXAMPLE_INDEX = "example_index"
_CARRIED = frozenset({CACHED_TEACHER, EXAMPLE_INDEX})
#: The views of an example, in the order of a two-view batch `(weak, strong)`.
VIEWS = ("weak", "strong")


def _carries(x):
    """Whether `x` is `{"inputs": ...}` with `"cached_teacher"` and/or `"example_index"`."""
    return isinstance(x, dict) and INPUTS in x and len(x) > 1 and set(x) <= {INPUTS} | _CARRIED


def carried_outputs(x):
    """`(inputs, the teacher outputs it carries)` of a batch's `x`, or `(x, None)`.

    A batch carries the teacher's outputs when `x` is a dict with the keys
    `"inputs"` and `"cached_teacher"` (and maybe `"example_index"`, see
    `carried_example_index`); any other `x` (a tensor, a pair of views, a
    multi-input model's dict) is returned as is. A dict of `"inputs"` and
    `"example_index"` gives its inputs and `None`.

    Example:

    >>> carried_outputs({"inputs": "views", "cached_teacher": "outputs"})
    ('views', 'outputs')
    >>> carried_outputs({"inputs": "views", "example_index": "rows"})
    ('views', None)
    >>> carried_outputs({"image": "pixels", "text": "tokens"})
    ({'image': 'pixels', 'text': 'tokens'}, None)
    """
    if _carries(x):
        return x[INPUTS], x.get(CACHED_TEACHER)
    return x, None


def carried_example_index(x):
    """The example indices a batch's `x` carries (`x["example_index"]`), or `None`.

    A batch carries them as `({"inputs": views, "example_index": index},
    labels)`, or with the teacher's cached outputs too, `({"inputs": views,
    "cached_teacher": outputs, "example_index": index}, labels)`: `index`
    holds each example's row in the training set, integers `(batch,)`.

    Example:

    >>> carried_example_index({"inputs": "views", "example_index": "rows"})
    'rows'
    >>> carried_example_index({"inputs": "views", "cached_teacher": "outputs"}) is None
    True
    """
    return x[EXAMPLE_INDEX] if _carries(x) and EXAMPLE_INDEX in x else None


class TeacherOutputs:
    """The teacher's outputs that a set of terms read, from one forward pass.

    Calling it on a batch of inputs runs the teacher's logits model (a final
    softmax set aside, see `keras_unikd.heads`) once, in inference mode, and
    returns `{"logits": logits, "features": {path: feature}}`: the features
    of `needs.feature_maps` whole (token features as maps, see
    `keras_unikd.tokens`), those of `needs.pooled_features` averaged over
    their spatial axes. Works on symbolic inputs too (the cache builds a
    functional model of it).

    Args:
        teacher: A functional or Sequential `keras.Model` with one output.
        needs: The terms' combined `TeacherNeeds`.
        token_layouts: Optional `{layer path: layout}` for token features
            (see `keras_unikd.taps.FeatureTap`).

    Attributes:
        feature_shapes: `{path: shape}` of the tapped features, before any
            reduction (what the terms are built from).
        num_classes: The logits' width.
        token_layouts: `{path: layout config}` of the token features.
        tap: The `keras_unikd.taps.FeatureTap` it runs.
    """

    def __init__(self, teacher, needs, token_layouts=None):
        self.needs = needs
        self.tap = FeatureTap(
            ModelLogits(teacher, "teacher").logits_model, needs.feature_paths, token_layouts
        )
        self.feature_shapes = dict(zip(self.tap.feature_paths, self.tap.feature_shapes))
        self.num_classes = self.tap.logits_shape[-1]
        self.token_layouts = {
            path: layout.config() for path, layout in self.tap.token_layouts.items()
        }

    def __call__(self, inputs):
        logits, features = self.tap(inputs, training=False)
        pooled = set(self.needs.pooled_features)
        return {
            "logits": logits,
            "features": {
                path: global_pool(feature) if path in pooled else feature
                for path, feature in zip(self.tap.feature_paths, features)
            },
        }


class TeacherSource:
    """The interface a `Distiller` asks for the teacher's outputs.

    Attributes:
        model: The teacher `keras.Model`, or `None` (a cache).
        logits_model: The model whose layers the Distiller may tap
            automatically (`"auto"` features), or `None`.
        num_classes: The teacher's class count.
        feature_shapes: `{path: shape}` of the tapped features (set by
            `prepare`).
        token_layouts: `{path: layout config}` of the token features.
    """

    model = None
    logits_model = None

    def split(self, x):
        """`(inputs, carried outputs or None)` of a batch's `x`; see `carried_outputs`."""
        return carried_outputs(x)

    def prepare(self, needs, token_layouts=None):
        """Gets ready to give the terms `needs` (a combined `TeacherNeeds`)."""
        raise NotImplementedError

    def outputs(self, weak, strong, carried):
        """The outputs of the batch's views: a list of one dict per view."""
        raise NotImplementedError

    def first_logits(self, inputs, carried, examples):
        """The teacher's logits of a batch's first `examples` (NumPy), for `fit`'s checks."""
        raise NotImplementedError


class OnlineTeacher(TeacherSource):
    """The frozen teacher, run once per step on all the views of the batch.

    The Distiller freezes the teacher (`trainable = False`). It runs in inference
    mode, so the two views of a two-view batch go through one concatenated
    pass, whose results equal two separate passes; every output is under
    stop-gradient. A batch that carries cached outputs is read instead.

    Args:
        teacher: A functional or Sequential `keras.Model` (logits or softmax
            output).
    """

    def __init__(self, teacher):
        self.model = teacher
        self._logits = ModelLogits(teacher, "teacher")
        self.logits_model = self._logits.logits_model
        self._outputs = None

    def prepare(self, needs, token_layouts=None):
        self._outputs = TeacherOutputs(self.model, needs, token_layouts)
        self.needs = needs
        self.num_classes = self._outputs.num_classes
        self.feature_shapes = self._outputs.feature_shapes
        self.token_layouts = self._outputs.token_layouts
        self.token_report = self._outputs.tap.token_report
        self.logits_shape = self._outputs.tap.logits_shape
        self._reader = CachedTeacher(self.num_classes, self.feature_shapes, online=True)
        self._reader.needs = needs

    def warn_if_set_aside(self):
        self._logits.warn_if_set_aside()

    def outputs(self, weak, strong, carried):
        if carried is not None:
            return self._reader.outputs(weak, strong, carried)
        return self._forward(weak, strong)

    def _forward(self, weak, strong):
        batch = ops.shape(keras.tree.flatten(weak)[0])[0]
        inputs = weak
        if strong is not None:
            inputs = keras.tree.map_structure(
                lambda w, s: ops.concatenate([w, s], axis=0), weak, strong
            )
        outputs = keras.tree.map_structure(ops.stop_gradient, self._outputs(inputs))
        if strong is None:
            return [outputs]
        return [
            keras.tree.map_structure(lambda value: value[:batch], outputs),
            keras.tree.map_structure(lambda value: value[batch:], outputs),
        ]

    def first_logits(self, inputs, carried, examples):
        if carried is not None:
            return self._reader.first_logits(inputs, carried, examples)
        return ops.convert_to_numpy(self._logits(inputs, training=False))


@keras.saving.register_keras_serializable(package="keras_unikd")
class CachedTeacher(TeacherSource):
    """The teacher's outputs carried by the batches: training without the teacher.

    Made by `keras_unikd.cache.TeacherCache.teacher_source()` from a cache's
    manifest, and passed to a `Distiller` in place of the teacher:
    `Distiller(cache.teacher_source(), student, terms=...)`. It knows the
    teacher's class count and its tapped features' shapes (what the terms
    are built from) and reads each batch's outputs, `({"inputs": views,
    "cached_teacher": {view: {"logits": ..., "features": {path: ...}}}},
    labels)` (`keras_unikd.cache.cached_teacher_pipeline`'s batches). The
    terms must read only what a cache holds: the logits and pooled features
    (`TeacherNeeds.cacheable`), of teacher layers the cache tapped.

    Args:
        num_classes: The teacher's class count.
        feature_shapes: `{layer path: shape}` of the teacher features the
            cache tapped (before pooling).
        input_shapes: The teacher's input shapes (without the batch axis),
            checked against the student's; `None`: not checked.
        token_layouts: `{path: layout config}` the cache read token
            features with (recorded in the Distiller's config).
        online: Internal: `True` when an `OnlineTeacher` reads a carried
            batch with it (the messages then say how to train online).

    Example:

    >>> source = CachedTeacher(5, {"t_stage1": (None, 8, 8, 16)}, input_shapes=[(8, 8, 3)])
    >>> source.get_config()["num_classes"]
    5
    """

    def __init__(
        self, num_classes, feature_shapes, input_shapes=None, token_layouts=None, online=False
    ):
        self.num_classes = int(num_classes)
        self.feature_shapes = {path: tuple(shape) for path, shape in feature_shapes.items()}
        self.input_shapes = (
            None if input_shapes is None else [tuple(shape) for shape in input_shapes]
        )
        self.token_layouts = dict(token_layouts or {})
        self.token_report = []
        self.logits_shape = (None, self.num_classes)
        self._online = online
        self.needs = None

    def prepare(self, needs, token_layouts=None):
        if not needs.cacheable:
            raise ValueError(
                f"This Distiller trains from a teacher cache (its teacher is a "
                f"CachedTeacher), but its terms cannot: {needs.reason}. Give the "
                "teacher model to train them online."
            )
        missing = [path for path in needs.pooled_features if path not in self.feature_shapes]
        if missing:
            raise ValueError(
                f"The terms read the teacher feature(s) {missing}, which the teacher cache "
                f"did not tap (it holds {sorted(self.feature_shapes)}). Build the cache for "
                "these terms (build_teacher_cache(..., terms=...))."
            )
        if token_layouts and {
            path: layout for path, layout in token_layouts.items()
        } != self.token_layouts:
            raise ValueError(
                f"teacher_token_layouts={token_layouts!r} differ from the layouts the "
                f"teacher cache read its token features with ({self.token_layouts!r}). "
                "Drop teacher_token_layouts: a cached teacher's come from its cache."
            )
        self.needs = needs

    def _fix(self):
        return (
            "Build the cache (build_teacher_cache) for this Distiller's terms "
            "(terms=distiller.terms) and views, and feed cached_teacher_pipeline's batches."
        )

    def outputs(self, weak, strong, carried):
        needs = self.needs
        if carried is None:
            raise ValueError(
                "This Distiller has no teacher model (its teacher is a CachedTeacher), but "
                "the batch carries no cached teacher outputs. Feed the batches of "
                "keras_unikd.cache.cached_teacher_pipeline, or give the teacher model."
            )
        if self._online and not needs.cacheable:
            raise ValueError(
                "The batch carries cached teacher outputs, but this Distiller cannot "
                f"train from a teacher cache: {needs.reason}. Train it online: feed "
                "batches without the cache (e.g. make_keyed_image_pipeline's)."
            )
        num_views = 1 if strong is None else 2
        if needs.views > num_views:
            raise ValueError(
                f"The terms read {needs.views} views per example, but the cached batch "
                "has one. Build and open the cache with two_views=True and feed "
                "cached_teacher_pipeline(..., two_views=True)."
            )
        missing = [view for view in VIEWS[:num_views] if view not in carried]
        if missing:
            raise ValueError(
                f"The batch's cached teacher outputs lack the {' and '.join(missing)} view "
                f"(they hold {sorted(carried)}); the batch has {num_views} view(s). "
                f"{self._fix()}"
            )
        return [self._view(view, carried[view]) for view in VIEWS[:num_views]]

    def _view(self, view, entry):
        """One view's outputs, float32 and under stop-gradient, checked."""
        logits = None
        if self.needs.logits:
            if "logits" not in entry:
                raise ValueError(
                    f"The batch's cached teacher outputs lack the {view} view's logits, "
                    f"which the terms read. {self._fix()}"
                )
            logits = ops.stop_gradient(ops.cast(entry["logits"], "float32"))
            if logits.shape[-1] != self.num_classes:
                raise ValueError(
                    f"The batch's cached teacher logits ({view} view) have "
                    f"{logits.shape[-1]} classes, the networks {self.num_classes}. "
                    f"{self._fix()}"
                )
        held = entry.get("features", {})
        features = {}
        for path in self.needs.pooled_features:
            if path not in held:
                raise ValueError(
                    f"The batch's cached teacher outputs lack the pooled feature of "
                    f"teacher layer {path!r} ({view} view), which the terms read (they "
                    f"hold {sorted(held)}). {self._fix()}"
                )
            feature = ops.stop_gradient(ops.cast(held[path], "float32"))
            channels = self.feature_shapes[path][-1]
            if len(feature.shape) != 2 or feature.shape[-1] != channels:
                raise ValueError(
                    f"The batch's cached pooled feature of teacher layer {path!r} "
                    f"({view} view) has shape {tuple(feature.shape)}; the layer has "
                    f"{channels} channels, so (batch, {channels}). {self._fix()}"
                )
            features[path] = feature
        return {"logits": logits, "features": features}

    def first_logits(self, inputs, carried, examples):
        if carried is None or "logits" not in carried.get(VIEWS[0], {}):
            return None
        return np.asarray(carried[VIEWS[0]]["logits"][:examples])

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "feature_shapes": {path: list(shape) for path, shape in self.feature_shapes.items()},
            "input_shapes": (
                None if self.input_shapes is None else [list(s) for s in self.input_shapes]
            ),
            "token_layouts": self.token_layouts,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def check_student_inputs(student):
    """Rejects a student whose inputs are named like a batch that carries outputs.

    Raises:
        ValueError: for inputs named exactly `"inputs"` and `"cached_teacher"`
            and/or `"example_index"`.
    """
    if _carries({tensor.name: None for tensor in student.inputs}):
        names = sorted(tensor.name for tensor in student.inputs)
        raise ValueError(
            f"The student's inputs are named {names}, the keys of a batch that "
            "carries cached teacher outputs or example indices "
            "(keras_unikd.teacher_source.carried_outputs). Rename either input."
        )


def teacher_source(teacher):
    """The `TeacherSource` of a Distiller's `teacher` argument.

    Args:
        teacher: A `keras.Model` (an `OnlineTeacher` of it) or a
            `TeacherSource` (returned as is, e.g. a `CachedTeacher`).

    Raises:
        TypeError: for anything else.
    """
    if isinstance(teacher, TeacherSource):
        return teacher
    if isinstance(teacher, keras.Model):
        return OnlineTeacher(teacher)
    raise TypeError(
        f"teacher must be a keras.Model, the path of a saved .keras model, or a teacher "
        f"source such as a teacher cache's (cache.teacher_source()); got "
        f"{type(teacher).__name__}."
    )
