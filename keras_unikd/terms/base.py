"""The term interface: what a distillation method is to the `Distiller`.

A *term* is a Keras layer that owns the weights of one distillation method
(aggregators, heads, regressors), declares the teacher and student layers it
reads, and maps one `ForwardRecord` (both networks' logits and tapped
features from a single forward pass each, the labels, the training progress)
to named float32 losses. The `Distiller` taps the union of its terms' layers,
runs each network once per step and sums the terms.
"""

import dataclasses
import typing

import keras
from keras import ops

from keras_unikd.validation import check_non_negative

AUTO_FEATURES = "auto"


def as_layer_paths(value, argument, allow_auto=False):
    """Layer paths as a tuple of strings; a single string is one path.

    Args:
        value: `None`, a layer name / `"outer/inner"` path, or a sequence of
            them; with `allow_auto`, also `"auto"`.
        argument: The argument's name, for the message.
        allow_auto: Whether `"auto"` (the Distiller chooses the layers,
            `keras_unikd.auto_taps`) is accepted; it is returned as is.

    Returns:
        A tuple of strings (empty for `None`), or `"auto"`.

    Raises:
        ValueError: for anything that is not a string or strings.
    """
    if value is None:
        return ()
    if allow_auto and isinstance(value, str) and value == AUTO_FEATURES:
        return AUTO_FEATURES
    if isinstance(value, str):
        return (value,)
    paths = tuple(value)
    for path in paths:
        if not isinstance(path, str) or not path:
            raise ValueError(
                f"{argument} must be layer names (strings), one name or a "
                f"list of names; got {value!r}."
            )
    return paths


def one_layer_path(value, argument, term, allow_auto=False):
    """`(path,)` for a term that reads one layer per network; else a `ValueError`
    naming `term` and `argument`. With `allow_auto`, `"auto"` is returned as is."""
    paths = as_layer_paths(value, argument, allow_auto=allow_auto)
    if paths == AUTO_FEATURES:
        return paths
    if len(paths) != 1:
        raise ValueError(
            f"{term} reads one layer per network: {argument} must be one layer name; "
            f"got {value!r}."
        )
    return paths


def choose_paired_stages(term, teacher, student):
    """Sets a stage-pairing term's `"auto"` sides to their deepest stage ends.

    For terms that pair teacher and student stages in order (AT, NST, VID,
    OFD, ReviewKD): each automatic side keeps as many of its deepest
    stages as the other side has (the other side's count when it is given
    by name), so the pairs line up from the deepest stage back.

    Args:
        term: The `DistillationTerm`, with `teacher_features` /
            `student_features`.
        teacher: The teacher's `keras_unikd.auto_taps.AutoTaps`, or `None`
            when its features are given by name; `student` likewise.
    """
    kind = type(term).__name__
    counts = [
        len(taps.require("stages", kind).stages) if taps is not None else len(paths)
        for taps, paths in ((teacher, term.teacher_features), (student, term.student_features))
    ]
    if teacher is not None:
        term.teacher_features = teacher.deepest(min(counts))
    if student is not None:
        term.student_features = student.deepest(min(counts))


def paths_config(paths):
    """Paths from `as_layer_paths` as a config value: a list, or `"auto"`."""
    return paths if paths == AUTO_FEATURES else list(paths)


def one_path_config(paths):
    """Paths from `one_layer_path` as a config value: the one path, or `"auto"`."""
    return paths if paths == AUTO_FEATURES else paths[0]


def feature_needs(term, why, pooled=False, logits=False):
    """The `TeacherNeeds` of a term that reads its `teacher_features`.

    Args:
        term: The `DistillationTerm`.
        why: What the term does with the whole maps (`"matches the
            teacher's full feature map ... point by point"`), for the reason
            a cache cannot serve it; unused when `pooled`.
        pooled: Whether the term reads the features only through their
            spatial mean (then a cache can serve it).
        logits: Whether the term also reads the teacher's logits.

    Features still `"auto"` (chosen later by a `Distiller`, from the teacher
    model) cannot be cached.
    """
    kind = f"term {term.name!r} ({type(term).__name__})"
    paths = term.teacher_features
    if paths == AUTO_FEATURES:
        return TeacherNeeds(
            logits=logits,
            views=term.views,
            reason=(
                f"{kind} has teacher_features='auto', chosen by the Distiller from the "
                "teacher model; give layer names to cache it"
            ),
        )
    if pooled:
        return TeacherNeeds(logits=logits, pooled_features=paths, views=term.views)
    return TeacherNeeds(
        logits=logits, feature_maps=paths, views=term.views, reason=f"{kind} {why}"
    )


# `warmup_epochs="auto"`: a quarter of the planned run, at most the 20 epochs
# of the DKD / UniKD reference recipes (which warm up over 20 epochs of 240).
# Chosen on the benchmark protocol (docs/benchmarks/defaults.md): against
# the paper's proportion, 1/12 of the run, a quarter gained 1.4 points (DKD)
# and 1.2 (UniKD) at 8 epochs, 10 seeds, and 0.4 (DKD) at 40, 7 seeds.
AUTO_WARMUP = "auto"
AUTO_WARMUP_FRACTION = 1 / 4
AUTO_WARMUP_MAX_EPOCHS = 20.0


def auto_warmup_epochs(planned_epochs):
    """The length, in epochs, of `warmup_epochs="auto"` for a run of `planned_epochs`.

    A quarter of the run, at most 20 epochs: the reference recipes' 20
    epochs on runs of 80 epochs or more (the paper's 240), and a quarter of
    shorter runs, where 20 epochs would outlast the run and the paper's
    proportion (1/12) is under an epoch on a run of 12 or fewer. Unknown (0
    or `None`), the run is taken to be long: 20 epochs.

    Args:
        planned_epochs: A number or a float32 scalar tensor.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> [float(auto_warmup_epochs(n)) for n in (8, 40, 240, None)]
    [2.0, 10.0, 20.0, 20.0]
    """
    planned = ops.cast(0.0 if planned_epochs is None else planned_epochs, "float32")
    quarter = ops.minimum(planned * AUTO_WARMUP_FRACTION, AUTO_WARMUP_MAX_EPOCHS)
    return ops.where(planned > 0, quarter, AUTO_WARMUP_MAX_EPOCHS)


@dataclasses.dataclass(frozen=True)
class ForwardShapes:
    """The shapes a term is built from.

    Attributes:
        teacher: `{layer path: shape}` of the teacher's tapped features.
        student: `{layer path: shape}` of the student's tapped features.
        num_classes: Number of classes of both networks' logits.
        teacher_model: The teacher `keras.Model`, for terms that read its
            weights at build (OFD's margins from its batch normalisation);
            `None` when the teacher is a cache's.
    """

    teacher: typing.Mapping[str, tuple]
    student: typing.Mapping[str, tuple]
    num_classes: int
    teacher_model: typing.Any = None


@dataclasses.dataclass(frozen=True)
class ForwardRecord:
    """Everything one training (or inspection) step knows, for the terms.

    Attributes:
        teacher_logits: `(batch, num_classes)`, under stop-gradient.
        student_logits: `(batch, num_classes)`.
        teacher_features: `{layer path: tensor}`, under stop-gradient.
        student_features: `{layer path: tensor}`.
        labels: int32 class ids, `(batch,)`, in `[0, num_classes)`.
        sample_weight: `(batch,)` weights or `None`.
        training: Python bool: whether the student runs in training mode
            (sampling, dropout, batch statistics).
        step: float32 scalar, optimizer steps taken before this one.
        epoch: float32 scalar, the running epoch counted from 1 (the
            reference's convention for warm-ups).
        strong: For a two-view batch `((weak, strong), labels)`, the record
            of the strong view (its logits and features; the same labels,
            weights and progress), while the fields above hold the weak
            view; `None` for a single-view batch.
        planned_epochs: float32 scalar, the number of epochs the run is
            planned for (`fit`'s `epochs`), 0 or `None` when unknown; the
            length of `warmup_epochs="auto"` warm-ups.
        example_index: int32 `(batch,)`, each example's row in the training
            set, when the batch carries it (`({"inputs": x, "example_index":
            index}, labels)`, see `keras_unikd.teacher_source`); else `None`.
            The same for both views of a two-view batch.
    """

    teacher_logits: typing.Any
    student_logits: typing.Any
    teacher_features: typing.Mapping[str, typing.Any]
    student_features: typing.Mapping[str, typing.Any]
    labels: typing.Any
    sample_weight: typing.Any
    training: bool
    step: typing.Any
    epoch: typing.Any
    strong: typing.Optional["ForwardRecord"] = None
    planned_epochs: typing.Any = None
    example_index: typing.Any = None

    @property
    def num_views(self):
        """1 for a single-view batch, 2 for `((weak, strong), labels)`."""
        return 1 if self.strong is None else 2


@dataclasses.dataclass(frozen=True)
class TeacherNeeds:
    """What a term reads of the teacher, and how each feature is reduced.

    A term's `teacher_needs()` returns one; `TeacherNeeds.combine` merges
    those of several terms. A teacher source (`keras_unikd.teacher_source`)
    gives the terms exactly this: the logits, each feature of
    `pooled_features` averaged over its spatial axes
    (`keras_unikd.layers.pooling.global_pool`: a `(batch, C)` vector) and
    each feature of `feature_maps` whole. A teacher-output cache
    (`keras_unikd.cache`) stores the logits and the pooled vectors, so the
    needs are `cacheable` when no full map is read.

    A term that declares a feature pooled must accept either the vector or
    the whole map for it (another term may read the map): `DistributionHead`
    does, pooling a map itself.

    Attributes:
        logits: Whether the term reads the teacher's logits.
        pooled_features: Teacher layer paths read only through their
            spatial mean, shallow to deep.
        feature_maps: Teacher layer paths read whole.
        views: 1, or 2 when the term reads both views of `((weak, strong),
            labels)` batches.
        reason: Why the needs cannot be cached (`""` when they can); by
            default it names the full maps.

    Example:

    >>> a = TeacherNeeds(logits=True, views=2)
    >>> b = TeacherNeeds(pooled_features=("t_stage1",))
    >>> TeacherNeeds.combine([a, b])
    TeacherNeeds(logits=True, pooled_features=('t_stage1',), feature_maps=(), views=2, reason='')
    >>> TeacherNeeds(feature_maps=("t_stage2",)).cacheable
    False
    """

    logits: bool = False
    pooled_features: typing.Tuple[str, ...] = ()
    feature_maps: typing.Tuple[str, ...] = ()
    views: int = 1
    reason: str = ""

    def __post_init__(self):
        for name in ("pooled_features", "feature_maps"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.feature_maps and not self.reason:
            object.__setattr__(
                self,
                "reason",
                f"it reads the teacher's full feature map(s) {list(self.feature_maps)!r}",
            )

    @property
    def cacheable(self):
        """Whether a teacher-output cache can hold all of it (no full map)."""
        return not self.reason

    @property
    def feature_paths(self):
        """Every teacher layer path read: the full maps, then the pooled ones."""
        return self.feature_maps + tuple(
            path for path in self.pooled_features if path not in self.feature_maps
        )

    @classmethod
    def combine(cls, needs):
        """The needs of several terms together: a union, the most views.

        A feature that one term reads whole and another pooled is read
        whole. The reasons of the terms that cannot be cached are joined
        with `"; "`; give each `reason` its term's name (see
        `DistillationTerm.teacher_needs`).
        """
        needs = list(needs)

        def union(name):
            paths = []
            for need in needs:
                paths.extend(path for path in getattr(need, name) if path not in paths)
            return paths

        maps = union("feature_maps")
        return cls(
            logits=any(need.logits for need in needs),
            pooled_features=tuple(path for path in union("pooled_features") if path not in maps),
            feature_maps=tuple(maps),
            views=max([1] + [need.views for need in needs]),
            reason="; ".join(need.reason for need in needs if need.reason),
        )


class DistillationTerm(keras.layers.Layer):
    """Base class of the distillation terms a `keras_unikd.Distiller` sums.

    A term is a Keras layer: the layers it creates in `build` (aggregators,
    heads, regressors) are its weights, trained by the Distiller's optimizer
    and saved with it. Subclasses set `teacher_features` / `student_features`
    (the layer paths they read; the Distiller taps the union of all terms'
    paths once per network; the string `"auto"` asks the Distiller to
    choose them with `keras_unikd.auto_taps` and to set the chosen paths
    here before it builds the term), create their layers in `build(shapes)` from a
    `ForwardShapes`, and return from `call(record)` a dict of unweighted
    float32 scalar losses keyed by `loss_names`. The base class multiplies
    every loss by `weight` and by the warm-up factor
    `min(record.epoch / warmup_epochs, 1)` (1 when `warmup_epochs=0`), so
    every term can be weighted and warmed up alike. With
    `warmup_epochs="auto"` the warm-up lasts a quarter of the planned run, at
    most 20 epochs (`auto_warmup_epochs`: the reference recipes' 20 epochs on
    runs of 80 or more), from `record.planned_epochs`, which `fit` tells the
    Distiller; without a plan (`train_on_batch`, hand-written loops without
    `Distiller(..., planned_epochs=N)`) it lasts 20 epochs.

    Views: a term reads single-view batches (`views=1`) or two-view batches
    `((weak, strong), labels)` (`views=2`), and a batch of the other kind is
    a `ValueError` naming the term. With `views=2`, `call` runs once on the
    weak view's record and once on `record.strong`, and the two views'
    losses are summed (cross-entropy and KD on both views, as MLKD and
    UniMLKD train); a term whose losses combine the views (MLKD's
    confidence masks come from the weak view) sets the class attribute
    `combines_views = True` and reads `record.strong` itself.

    Args:
        weight: Non-negative weight of the term's losses.
        warmup_epochs: Epochs of linear warm-up (`0`: none; fractions
            allowed), or `"auto"`: a quarter of the planned epochs, at most
            20 (20 when the plan is unknown). Epochs count from 1, as in the
            DKD/UniKD reference code: the factor is `1 / warmup_epochs`
            during the first epoch, so a warm-up of one epoch or less is none.
        views: 1 or 2, the views per example of the batches the term reads.
        **kwargs: Base `Layer` arguments (`name`, `dtype`).

    Example: attention transfer (Zagoruyko & Komodakis, 2017) as a term.

    >>> import keras
    >>> from keras import ops
    >>> class AttentionTransfer(DistillationTerm):
    ...     def __init__(self, teacher_feature, student_feature, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.teacher_features = (teacher_feature,)
    ...         self.student_features = (student_feature,)
    ...     def call(self, record):
    ...         def attention(feature):
    ...             a = ops.mean(ops.square(ops.cast(feature, "float32")), axis=-1)
    ...             a = ops.reshape(a, (ops.shape(a)[0], -1))
    ...             return a / (ops.norm(a, axis=-1, keepdims=True) + 1e-6)
    ...         t = attention(record.teacher_features[self.teacher_features[0]])
    ...         s = attention(record.student_features[self.student_features[0]])
    ...         per_example = ops.mean(ops.square(s - t), axis=-1)
    ...         return {self.loss_names[0]: ops.mean(per_example)}
    ...     def get_config(self):
    ...         return {**super().get_config(),
    ...                 "teacher_feature": self.teacher_features[0],
    ...                 "student_feature": self.student_features[0]}
    >>> term = AttentionTransfer("t_conv", "s_conv", weight=1000.0, name="at")
    >>> term.loss_names
    ('at_loss',)
    """

    # Whether `call` reads both views of a two-view record itself; if not,
    # it runs once per view and the views' losses are summed.
    combines_views = False
    # Whether `call` reads `record.example_index` (each example's row in the
    # training set); a Distiller then requires batches that carry it.
    needs_example_index = False

    def __init__(self, weight=1.0, warmup_epochs=0, views=1, **kwargs):
        super().__init__(**kwargs)
        check_non_negative(f"{self.__class__.__name__} weight", weight)
        if warmup_epochs != AUTO_WARMUP and (
            isinstance(warmup_epochs, bool)
            or not isinstance(warmup_epochs, (int, float))
            or not 0 <= warmup_epochs < float("inf")
        ):
            raise ValueError(
                f"{self.__class__.__name__} warmup_epochs must be a number of epochs >= 0 "
                f"(0 switches the warm-up off) or {AUTO_WARMUP!r} (a length fitted to "
                f"the planned epochs); got {warmup_epochs!r}."
            )
        if views not in (1, 2) or isinstance(views, bool):
            raise ValueError(
                f"{self.__class__.__name__} views must be 1 (batches of inputs) "
                f"or 2 (batches of (weak, strong) input pairs); got {views!r}."
            )
        self.weight = weight
        self.warmup_epochs = warmup_epochs
        self.views = views
        self.teacher_features = ()
        self.student_features = ()

    @property
    def loss_names(self):
        """Names of the losses `call` returns (metric names in the logs)."""
        return (f"{self.name}_loss",)

    def choose_auto_features(self, teacher, student):
        """Sets the features given as `"auto"` from the models' automatic taps.

        The `Distiller` calls it once, before it taps the teacher, with a
        `keras_unikd.auto_taps.AutoTaps` per network whose features the term
        left to `"auto"` (`None` for a side given by name). By default the
        term reads every stage end and then the pooled vector (UniKD's AFF
        fuses them all); a term that reads some of them (one stage, the
        pooled vector) overrides this, and stage-pairing terms use
        `choose_paired_stages`.

        Args:
            teacher: The teacher's `AutoTaps`, or `None`.
            student: The student's `AutoTaps`, or `None`.
        """
        if teacher is not None:
            self.teacher_features = teacher.paths
        if student is not None:
            self.student_features = student.paths

    def teacher_needs(self):
        """What the term reads of the teacher, as a `TeacherNeeds`.

        The teacher source gives the term exactly this, and a teacher-output
        cache (`keras_unikd.cache`) stores it. The default: the teacher's
        logits on the term's `views`, and its `teacher_features` whole
        (maps, which a cache does not hold); a term that reads a feature
        only through its spatial mean overrides this method to declare it
        in `pooled_features`, as `UniKDFeatures` does.
        """
        if self.teacher_features:
            return TeacherNeeds(
                logits=True,
                feature_maps=(
                    () if self.teacher_features == AUTO_FEATURES else self.teacher_features
                ),
                views=self.views,
                reason=(
                    f"term {self.name!r} ({type(self).__name__}) reads the teacher's "
                    f"feature(s) {paths_config(self.teacher_features)!r} and does not "
                    "declare them cacheable (override `teacher_needs()` if it only "
                    "reads them pooled)"
                ),
            )
        return TeacherNeeds(logits=True, views=self.views)

    def build(self, shapes):
        """Creates the term's layers from a `ForwardShapes`; none by default."""
        del shapes

    def check_example_index(self, example_index):
        """Checks the example indices of `fit`'s data before training (terms
        with `needs_example_index`); raises `ValueError` for indices the term
        cannot read. Nothing by default.

        Args:
            example_index: A NumPy integer array: every index of array data,
                or those of the first batch of a dataset.
        """
        del example_index

    def call(self, record):
        """Maps a `ForwardRecord` to `{loss name: unweighted float32 scalar}`."""
        raise NotImplementedError(
            f"{self.__class__.__name__} must implement call(record), returning "
            f"a dict with the keys {self.loss_names}."
        )

    def warmup_factor(self, epoch, planned_epochs=None):
        """`min(epoch / warmup length, 1)`, or 1 without a warm-up.

        Args:
            epoch: The running epoch, counted from 1 (a float32 scalar).
            planned_epochs: The planned epochs of the run (0 or `None`:
                unknown), for `warmup_epochs="auto"`.

        Returns:
            The factor: a float32 scalar, or the Python float 1.0.
        """
        if not self.warmup_epochs:
            return 1.0
        epoch = ops.cast(epoch, "float32")
        return ops.minimum(epoch / self.warmup_length(planned_epochs), 1.0)

    def warmup_length(self, planned_epochs=None):
        """The warm-up's length in epochs (0 without one), for a run of `planned_epochs`."""
        if self.warmup_epochs == AUTO_WARMUP:
            return auto_warmup_epochs(planned_epochs)
        return float(self.warmup_epochs)

    def tuning_hint(self, loss_name):
        """What to lower when `loss_name` of this term dominates a run's total loss."""
        del loss_name
        return f"its weight ({type(self).__name__}(weight={self.weight:g}) now)"

    def __call__(self, record):
        """Runs `call` and returns its losses, weighted and warmed up.

        Terms are called with a `ForwardRecord` by the `Distiller`, which
        builds them first; Keras's tensor-input machinery (autocasting,
        masking) does not apply to a record, so it is bypassed.
        """
        if not isinstance(record, ForwardRecord):
            raise TypeError(
                f"A distillation term is called with a ForwardRecord (the "
                f"Distiller builds one each step); got {type(record).__name__}."
            )
        self._check_views(record)
        if self.views == 2 and not self.combines_views:
            weak, strong = self._losses_of(record), self._losses_of(record.strong)
            losses = {name: weak[name] + strong[name] for name in self.loss_names}
        else:
            losses = self._losses_of(record)
        factor = self.weight * self.warmup_factor(record.epoch, record.planned_epochs)
        return {name: losses[name] * factor for name in self.loss_names}

    def _losses_of(self, record):
        """`call(record)`, checked against `loss_names`, in float32."""
        losses = self.call(record)
        if not isinstance(losses, dict) or set(losses) != set(self.loss_names):
            got = sorted(losses) if isinstance(losses, dict) else type(losses).__name__
            raise ValueError(
                f"{self.__class__.__name__}.call must return a dict with the "
                f"keys {list(self.loss_names)} (its loss_names); got {got}."
            )
        return {name: ops.cast(losses[name], "float32") for name in self.loss_names}

    def _check_views(self, record):
        if record.num_views == self.views:
            return
        kind = type(self).__name__
        if self.views == 2:
            raise ValueError(
                f"Term {self.name!r} reads two views per example (views=2), but "
                "the batch has one. Feed ((weak, strong), labels) batches (e.g. "
                "keras_unikd.data two-view pipelines), or give "
                f"{kind}(..., views=1) where the term allows it."
            )
        raise ValueError(
            f"Term {self.name!r} reads one view per example (views=1), but the "
            "batch has two ((weak, strong), labels). Give "
            f"{kind}(..., views=2) to apply it to both views and sum them, or "
            "feed single-view batches."
        )

    def get_build_config(self):
        # The Distiller builds its terms from the tapped shapes: no build
        # config is saved.
        return None

    def get_config(self):
        config = super().get_config()
        config.update(
            {"weight": self.weight, "warmup_epochs": self.warmup_epochs, "views": self.views}
        )
        return config


# The argument checks lived here; they are keras_unikd.validation's now.
_MOVED_CHECKS = ("check_non_negative", "check_positive", "check_bool")


def __getattr__(name):
    if name not in _MOVED_CHECKS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    from keras_unikd import validation

    warnings.warn(
        f"keras_unikd.terms.base.{name} moved to keras_unikd.validation.{name} "
        "(arguments: name, value).",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(validation, name)
