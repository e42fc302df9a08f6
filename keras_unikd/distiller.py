"""The Distiller: a `keras.Model` that trains a student from a frozen teacher."""

import contextlib
import os
import warnings

import keras
import numpy as np
from keras import ops

from keras_unikd import losses as unikd_losses
from keras_unikd.auto_taps import auto_taps
from keras_unikd.backup import DATA_ARGUMENTS
from keras_unikd.backup import StepBackup
from keras_unikd.backup import fit_with_backup
from keras_unikd.callbacks import DistillationWatch
from keras_unikd.callbacks import NonFiniteLossGuard
from keras_unikd.callbacks import TrainingPlan
from keras_unikd.distiller_checks import check_evaluation_labels
from keras_unikd.distiller_checks import check_example_indices
from keras_unikd.distiller_checks import check_input_scale
from keras_unikd.distiller_checks import check_integral_labels
from keras_unikd.distiller_checks import check_no_shared_weights
from keras_unikd.distiller_checks import check_not_empty
from keras_unikd.distiller_checks import check_validation_labels
from keras_unikd.distiller_checks import deserialize_term
from keras_unikd.distiller_checks import first_batch
from keras_unikd.distiller_checks import load_model_argument
from keras_unikd.distiller_checks import require_example_index
from keras_unikd.distiller_checks import warn_about_a_nan_evaluation
from keras_unikd.heads import ModelLogits
from keras_unikd.heads import check_logits
from keras_unikd.keras_internals import KerasInternals
from keras_unikd.keras_internals import reducible_logs
from keras_unikd.keyword_form import KEYWORD_OPTIONS
from keras_unikd.keyword_form import terms_from_keywords
from keras_unikd.taps import FeatureTap
from keras_unikd.teacher_source import carried_example_index
from keras_unikd.teacher_source import check_student_inputs
from keras_unikd.teacher_source import teacher_source
from keras_unikd.terms import DistillationTerm
from keras_unikd.terms import ForwardRecord
from keras_unikd.terms import ForwardShapes
from keras_unikd.terms.base import AUTO_FEATURES
from keras_unikd.terms.base import AUTO_WARMUP
from keras_unikd.terms.base import TeacherNeeds
from keras_unikd.terms.base import auto_warmup_epochs


def _union(path_lists):
    """The paths of all lists, each once, in order of first appearance."""
    return list(dict.fromkeys(path for paths in path_lists for path in paths))


def _check_terms(terms):
    terms = list(terms)
    if not terms:
        raise ValueError(
            "terms=[] leaves nothing to train on. Give at least one term, "
            "e.g. terms=[terms.CrossEntropy(), terms.KD()]."
        )
    for term in terms:
        if not isinstance(term, DistillationTerm):
            raise TypeError(
                f"Every term must be a keras_unikd.terms.DistillationTerm; got "
                f"{term!r}. Layer names go into a term (terms.UniKDFeatures("
                "teacher_features=..., student_features=...)) or into the "
                "keyword form (teacher_features=..., student_features=...)."
            )
    owners = {}
    for term in terms:
        for name in term.loss_names:
            if name in owners:
                raise ValueError(
                    f"Terms {owners[name]!r} and {term.name!r} both report a "
                    f"loss named {name!r}. Give one of them another name "
                    f"(e.g. {type(term).__name__}(..., name='{term.name}_2'))."
                )
            owners[name] = term.name
    if len({id(term) for term in terms}) != len(terms):
        raise ValueError("The same term object is listed twice; list it once.")
    return terms


@keras.saving.register_keras_serializable(package="keras_unikd")
class Distiller(KerasInternals, keras.Model):
    """Trains a student from a frozen teacher with a sum of distillation terms.

    Each training step gets the teacher's outputs from its teacher source
    (the frozen teacher run in inference mode under stop-gradient, or a
    teacher-output cache's outputs carried by the batch) and runs the student
    once, tapping its logits and the union of the layers that the terms
    read, then sums the terms' losses
    (and the student's own regularisation losses, `regularization_loss`,
    when it has any). Every loss, weighted as it enters the total, is a
    metric in the progress bar, `History`, `CSVLogger` and TensorBoard.

    Two ways to say what to distil:

    - `terms=[...]`: a list of `keras_unikd.terms.DistillationTerm`s, e.g.
      `[terms.CrossEntropy(), terms.DKD(...), terms.UniKDFeatures(...)]`, or
      terms of your own;
    - the keyword form (`teacher_features`, `student_features`,
      `logits_loss`, `distribution_loss`, `ce_weight`, `logits_weight`,
      `feature_weight`, `consistency_weight`, `temperature`,
      `distribution_temperature`, `dkd_alpha`, `dkd_beta`, `warmup_epochs`,
      `fuse_teacher_features`, `fuse_student_features`,
      `aggregator_mid_channels`, `log_var_range`, `seed`,
      `logit_standardization`, `mlkd_temperatures`, `mlkd_level_weights`,
      `mlkd_level_scaling`, `views`): UniKD on DKD by default, built as
      `[CrossEntropy, <DKD, KD or MLKD>, UniKDFeatures]` from the method table
      (`keras_unikd.methods`) by `keras_unikd.keyword_form.terms_from_keywords`
      (whose docstring lists the defaults: the paper's ResNet32x4 ->
      ResNet8x4 recipe).

    Batches are `(x, labels)` or, for terms that read two augmented views
    of each example (MLKD, UniMLKD: `views=2`), `((weak, strong), labels)`:
    the teacher runs once on both views (one concatenated pass, in
    inference mode), the student once per view; the metrics and `call`
    outside training use the weak view. A term given batches with the other
    number of views raises a `ValueError` naming it. For models with several
    inputs, `x` is a dict (or list) of them, and two views are a pair of
    such structures.

    The teacher's outputs come from a teacher source
    (`keras_unikd.teacher_source`): given a model, the Distiller runs it,
    frozen; given a teacher-output cache's source
    (`keras_unikd.cache.TeacherCache.teacher_source()`), it reads the
    outputs that each batch carries (the batches of
    `keras_unikd.cache.cached_teacher_pipeline`) and has no teacher model. A
    Distiller given the model reads such batches too, without running the
    teacher. Terms that need the teacher online (`teacher_needs` is not
    cacheable: `FitNetHint`, a teacher-side aggregator, teacher features
    chosen by `"auto"`) make a cached batch a `ValueError` naming them; so
    does a batch that lacks a view or an output the terms read.

    Softmax heads: a teacher or student whose output is a softmax
    (`keras.applications` models by default, `Dense(..., activation=
    "softmax")`, a final `Softmax` or `Activation("softmax")` layer) is
    distilled on the logits that enter the softmax (`keras_unikd.heads`),
    which a warning says once. The networks themselves are unchanged:
    `distiller.student` still outputs probabilities, and saving the
    Distiller or the student saves the models as given. A softmax hidden
    inside a custom layer is found in `fit`'s first batch (a `ValueError`
    naming the network and the fix).

    `call(x)` is the student's logits, so `evaluate` and `predict` use the
    student alone, `val_loss` is the student's cross-entropy, and compiled
    metrics get logits (accuracy is the same as on probabilities; give
    cross-entropy metrics `from_logits=True`). `call(x, training=True)`
    returns `{"logits", "features"}`, the student's logits and tapped
    features, which `compute_loss` distils. Warm-ups read the training
    progress from the Distiller's own step counter (`training_step`),
    `steps_per_epoch` and, for `warmup_epochs="auto"`, `planned_epochs`, so
    `fit`, `train_on_batch` and a hand-written loop that calls
    `compute_loss` give the same factors; `fit` learns both from its data
    and its `epochs`. `fit` also adds a `NonFiniteLossGuard`. Labels are
    sparse integer class ids in `[0, num_classes)` (integer, or float with
    no fractional part); a batch with another label gets a NaN `loss` (its
    terms stay finite), which the guard reports.

    Args:
        teacher: Trained functional or Sequential `keras.Model` with a single
            logits (or softmax, see above) output, or the path of one saved
            as `.keras`. It is frozen (`trainable = False`) here. Or a teacher
            source, e.g. `cache.teacher_source()` to train from a
            teacher-output cache without the teacher model (then
            `distiller.teacher` is `None`).
        student: Functional or Sequential `keras.Model` (or a `.keras` path),
            same input shape and number of classes as the teacher, sharing
            no layer with it.
        terms: A list of `DistillationTerm`s, or `None` for the keyword form.
        steps_per_epoch: Optimizer steps per epoch, for warm-ups outside
            `fit` (`train_on_batch`, hand-written loops); `fit` sets it from
            its data.
        teacher_token_layouts: Optional `{layer path: "grid" | "sequence" |
            (prefix_tokens, height, width)}`: how tapped token features
            `(batch, tokens, C)` of the teacher become maps, where the rule
            of `keras_unikd.tokens` does not fit (a grid after a few prefix
            tokens for image models, else an `(L, 1)` sequence). Each
            layout the rule chooses is printed once, at construction, and
            kept here (explicit), so a saved Distiller reloads it silently.
        student_token_layouts: The same for the student.
        planned_epochs: The epochs the run is planned for, for
            `warmup_epochs="auto"` outside `fit`; `fit` sets it from its
            `epochs`. Unknown (0), "auto" warm-ups last 20 epochs.
        **kwargs: The keyword-form options above (not together with
            `terms`) and base `keras.Model` arguments (`name`).

    Features `"auto"` (the keyword form's default; `terms.UniKDFeatures`
    takes it too) are chosen from the model's graph by
    `keras_unikd.auto_taps.auto_feature_paths`: the end of each of the
    deepest 4 spatial resolutions and the pooled vector. The choice is
    printed once, at construction; each term keeps the layers its method
    reads (`DistillationTerm.choose_auto_features`: UniKD all of them, AT
    the stages, SP the last stage, PKT and RKD the pooled vector) and then
    holds their names.

    Raises:
        ValueError: for unknown layer names (the message lists the layers
            that exist), token features that fit no grid (the message gives
            the override), teacher and student with different input shapes or
            class counts, a student sharing layers with the teacher, tapped
            features a term cannot use, two terms reporting the same loss
            name, or inconsistent options.
        FileNotFoundError: for a teacher or student path that does not exist.

    Example:

    ```python
    import keras
    from keras_unikd import Distiller, terms

    def network(width, name):
        inputs = keras.Input((28, 28, 1))
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                                name=f"{name}_stage1")(inputs)
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Conv2D(2 * width, 3, padding="same",
                                activation="relu", name=f"{name}_stage2")(x)
        x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
        return keras.Model(inputs, keras.layers.Dense(10)(x), name=name)

    teacher, student = network(32, "t"), network(8, "s")
    distiller = Distiller(
        teacher,
        student,
        terms=[
            terms.CrossEntropy(),
            terms.DKD(alpha=1.0, beta=8.0, temperature=4.0, warmup_epochs=2),
            terms.UniKDFeatures(
                teacher_features=["t_stage1"],
                student_features=["s_stage1", "s_stage2", "s_pool"],
            ),
        ],
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      metrics=["accuracy"])
    x = keras.random.uniform((64, 28, 28, 1))
    y = keras.random.randint((64,), 0, 10)
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    distiller.student.save("student.keras")
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        terms=None,
        steps_per_epoch=None,
        teacher_token_layouts=None,
        student_token_layouts=None,
        planned_epochs=None,
        **kwargs,
    ):
        options = {key: kwargs.pop(key) for key in KEYWORD_OPTIONS if key in kwargs}
        super().__init__(**kwargs)
        if isinstance(teacher, (str, os.PathLike)):
            teacher = load_model_argument(teacher, "teacher")
        student = load_model_argument(student, "student")
        if terms is None:
            terms = terms_from_keywords(**options)
        elif options:
            raise ValueError(
                f"Give either terms=[...] or the keyword options "
                f"({', '.join(sorted(options))}), not both: the keyword options "
                "build terms of their own. Set these values on the terms."
            )
        self.teacher_source = teacher_source(teacher)
        self.teacher = self.teacher_source.model  # None when the teacher is a cache's
        self.student = student
        self.terms = _check_terms(terms)
        # Softmax heads are set aside: the terms and metrics read logits.
        self._student_logits = ModelLogits(student, "student")
        self._auto_teacher_terms = self._choose_auto_features(
            {"teacher": teacher_token_layouts, "student": student_token_layouts}
        )
        with self._naming_terms("teacher"):
            self.teacher_source.prepare(self.teacher_needs, teacher_token_layouts)
        self.teacher_token_layouts = self.teacher_source.token_layouts
        for line in self.teacher_source.token_report:
            print(f"keras_unikd: teacher {line}")
        self._student_tap = self._tap_student(student_token_layouts)
        self._validate_models()
        if self.teacher is not None:
            self.teacher.trainable = False
        self.num_classes = self._student_tap.logits_shape[-1]
        self._build_terms()

        # Training progress, in the model's state: saved, restored by
        # BackupAndRestore, identical under fit, train_on_batch and loops.
        self.training_step = self._counter("training_step", 0)
        self.steps_per_epoch = self._counter("steps_per_epoch", steps_per_epoch or 0)
        self.planned_epochs = self._counter("planned_epochs", planned_epochs or 0)
        self._reports_additional_losses = self._adds_losses()
        self.loss_term_trackers = {
            name: keras.metrics.Mean(name=name) for name in self.loss_term_names
        }
        self.built = True
        if self.teacher is not None:
            self.teacher_source.warn_if_set_aside()
        self._student_logits.warn_if_set_aside()

    # ------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------

    def _counter(self, name, value):
        return self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(float(value)),
            dtype="float32",
            trainable=False,
            aggregation="only_first_replica",
            name=name,
        )

    def _choose_auto_features(self, token_layouts):
        """Sets the layers of the terms whose features are `"auto"`.

        Each network's choice (`keras_unikd.auto_taps.auto_taps`) is
        printed once and handed to each such term's `choose_auto_features`,
        which keeps what its method reads. Returns the names of the terms
        whose teacher features were chosen.
        """
        models = {
            "teacher": self.teacher_source.logits_model,
            "student": self._student_logits.logits_model,
        }
        wanted = {
            side: [
                term for term in self.terms if getattr(term, f"{side}_features") == AUTO_FEATURES
            ]
            for side in models
        }
        if wanted["teacher"] and models["teacher"] is None:
            raise ValueError(
                f"Term(s) {[term.name for term in wanted['teacher']]} choose their "
                "teacher_features automatically ('auto'), which needs the teacher model, but "
                "the teacher is a cache's. Give the layer names instead."
            )
        chosen = {}
        for side, model in models.items():
            if wanted[side]:
                chosen[side] = auto_taps(model, token_layouts=token_layouts[side])
                print(
                    f"keras_unikd: automatic taps of {side} {model.name!r}: "
                    f"{side}_features={list(chosen[side].paths)!r}"
                )
        for term in self.terms:
            sides = {side: chosen[side] if term in wanted[side] else None for side in models}
            if any(sides.values()):
                term.choose_auto_features(sides["teacher"], sides["student"])
        return [term.name for term in wanted["teacher"]]

    @contextlib.contextmanager
    def _naming_terms(self, side):
        """Adds the terms that read a layer to a tap's unknown-layer `ValueError`."""
        argument = f"{side}_features"
        paths = {term.name: getattr(term, argument) for term in self.terms}
        try:
            yield
        except ValueError as error:
            users = [name for name, own in paths.items() if any(repr(p) in str(error) for p in own)]
            if not users:
                raise
            raise ValueError(f"{error} (The {side} layer is read by term(s) {users}.)") from error

    def _tap_student(self, token_layouts):
        """One tap of the student for the union of the terms' student features.

        The token layouts chosen by rule are printed, and kept, explicit, as
        `student_token_layouts`.
        """
        paths = _union(term.student_features for term in self.terms)
        with self._naming_terms("student"):
            tap = FeatureTap(self._student_logits.logits_model, paths, token_layouts=token_layouts)
        for line in tap.token_report:
            print(f"keras_unikd: student {line}")
        self.student_token_layouts = {
            path: layout.config() for path, layout in tap.token_layouts.items()
        }
        return tap

    def _validate_models(self):
        source = self.teacher_source
        student_input = [tuple(tensor.shape[1:]) for tensor in self.student.inputs]
        if self.teacher is not None:
            check_no_shared_weights(self.teacher, self.student)
            teacher_input = [tuple(tensor.shape[1:]) for tensor in self.teacher.inputs]
        else:
            teacher_input = source.input_shapes or student_input
        if teacher_input != student_input:
            raise ValueError(
                f"Teacher input shape(s) {teacher_input} differ from student "
                f"input shape(s) {student_input}; both must read the same batch."
            )
        check_student_inputs(self.student)
        teacher_name = self.teacher.name if self.teacher is not None else "teacher"
        for name, shape in (
            (teacher_name, source.logits_shape),
            (self.student.name, self._student_tap.logits_shape),
        ):
            if len(shape) != 2:
                raise ValueError(
                    f"Model {name!r} outputs shape {shape}; "
                    "expected logits of shape (batch, num_classes)."
                )
        teacher_classes = source.num_classes
        student_classes = self._student_tap.logits_shape[-1]
        if teacher_classes != student_classes:
            raise ValueError(
                f"Teacher has {teacher_classes} classes but student has "
                f"{student_classes}; distillation needs the same classes."
            )

    def _build_terms(self):
        shapes = ForwardShapes(
            teacher=self.teacher_source.feature_shapes,
            student=dict(zip(self._student_tap.feature_paths, self._student_tap.feature_shapes)),
            num_classes=self.num_classes,
            teacher_model=self.teacher,
        )
        for term in self.terms:
            if term.built:
                continue
            try:
                term.build(shapes)
            except ValueError as error:
                raise ValueError(f"Term {term.name!r}: {error}") from error

    def _adds_losses(self):
        """Whether the student (or a term) adds losses of its own.

        Weight regularizers are seen on the weights; activity regularizers
        and `add_loss` losses only in a forward pass, so the student runs
        once on a batch of zeros, in a scope that keeps its state unchanged.
        A student whose input shape is not fully known cannot run here: its
        `regularization_loss` is then always reported (zero if it adds none),
        so that no loss it adds is dropped.
        """
        if any(weight.regularizer is not None for weight in self.trainable_weights):
            return True
        # One input (also a Sequential's), or the structure (dict, list) of a
        # functional model's several inputs.
        structure = self.student.inputs[0] if len(self.student.inputs) == 1 else self.student.input
        inputs = keras.tree.flatten(structure)
        if any(dim is None for tensor in inputs for dim in tensor.shape[1:]):
            return True
        zeros = [ops.zeros((1, *tensor.shape[1:]), dtype=tensor.dtype) for tensor in inputs]
        with keras.StatelessScope(collect_losses=True) as scope:
            self.student(keras.tree.pack_sequence_as(structure, zeros), training=True)
        return bool(scope.losses)

    @property
    def loss_term_names(self):
        """Names of the losses this Distiller reports, in order."""
        names = [name for term in self.terms for name in term.loss_names]
        if self._reports_additional_losses:
            names.append("regularization_loss")
        return names

    @property
    def teacher_needs(self):
        """What the terms read of the teacher, a `terms.TeacherNeeds`.

        What the teacher source gives the terms, and what a teacher-output
        cache must hold for this Distiller to train from it
        (`keras_unikd.cache`); when `cacheable` is false,
        `reason` names the terms that need the teacher online: terms that
        read the teacher's full feature maps (a teacher-side aggregator,
        `FitNetHint`) and terms whose teacher features were chosen
        automatically (`"auto"`) at construction.

        Example:

        >>> import keras
        >>> from keras_unikd import Distiller, terms
        >>> def network(name):
        ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name=name)
        >>> distiller = Distiller(network("t"), network("s"), terms=[terms.KD(views=2)])
        >>> distiller.teacher_needs
        TeacherNeeds(logits=True, pooled_features=(), feature_maps=(), views=2, reason='')
        """
        needs = [term.teacher_needs() for term in self.terms]
        needs += [
            TeacherNeeds(
                logits=True,
                reason=(
                    f"term {name!r} reads teacher features chosen automatically "
                    "(teacher_features='auto'); give the printed layer names instead "
                    "(one teacher layer, pooled by the term's head, can be cached)"
                ),
            )
            for name in self._auto_teacher_terms
        ]
        return TeacherNeeds.combine(needs)

    # ------------------------------------------------------------------
    # Keras API
    # ------------------------------------------------------------------

    def call(self, inputs, training=False):
        """The student's logits; in training also its tapped features.

        For a student that ends in a softmax, the logits are the softmax's
        input (`distiller.student` itself still outputs probabilities).

        `inputs` is a batch of inputs, or a pair `(weak, strong)` of two
        views of each example; out of training only the weak view is used.

        Returns:
            The student's logits, or with `training=True` a dict
            `{"logits": logits, "features": {layer path: tensor}}` from one
            forward pass, which `compute_loss` distils; for two views, that
            of the weak view, with the strong view's under `"strong"`.
        """
        if not training:
            return self._student_logits(self._views(inputs)[0], training=False)
        return self._student_outputs(inputs, training=True)

    def _views(self, inputs):
        """`(weak, strong)` for a two-view batch, `(inputs, None)` otherwise.

        Two views are a pair: of tensors for a single-input student, of
        input structures (dicts or lists, one per view) for a multi-input one.
        A batch that carries cached teacher outputs gives its inputs' views.
        """
        inputs, _ = self.teacher_source.split(inputs)
        if not isinstance(inputs, (tuple, list)):
            return inputs, None
        if len(self.student.inputs) > 1 and not all(
            isinstance(view, (dict, tuple, list)) for view in inputs
        ):
            return inputs, None  # one view of a multi-input model, as a list
        if len(inputs) != 2:
            raise ValueError(
                f"The Distiller got {len(inputs)} inputs per batch; it takes one "
                "batch of inputs, or two views of it as ((weak, strong), labels) "
                "batches."
            )
        return inputs[0], inputs[1]

    def _student_outputs(self, inputs, training):
        """The student's logits and features, per view, one pass per view.

        The views go through separate passes (in training mode each gets
        its own batch-normalisation statistics, as in the MLKD and UniMLKD
        reference code).
        """
        weak, strong = self._views(inputs)
        outputs = self._student_forward(weak, training)
        if strong is not None:
            outputs["strong"] = self._student_forward(strong, training)
        return outputs

    def _student_forward(self, inputs, training):
        logits, features = self._student_tap(inputs, training=training)
        return {
            "logits": logits,
            "features": dict(zip(self._student_tap.feature_paths, features)),
        }

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training; see `keras.Model.compile`.

        The losses are the terms, so `loss` must stay `None`. `metrics` are
        computed on the student's logits in training and evaluation.
        """
        if loss is not None:
            raise ValueError(
                "Distiller.compile does not take a `loss`: the losses are the "
                "Distiller's terms (or its keyword options: ce_weight, "
                "logits_loss, distribution_loss, ...). Remove `loss=`."
            )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a loaded Distiller with its saved optimizer and metrics."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        *,
        validation_data=None,
        **kwargs,
    ):
        """`keras.Model.fit`, with the Distiller's own callbacks and checks.

        Adds a `TrainingPlan` (steps per epoch and planned epochs for the
        warm-ups, a warning for a warm-up longer than the run), a
        `NonFiniteLossGuard` and a `DistillationWatch` (a warning when, after
        the warm-up, the student's cross-entropy stays far above its first
        epoch's or reaches chance level), unless `callbacks` holds one
        already (pass `NonFiniteLossGuard(raise_error=True)` to raise rather
        than stop).

        Before training, the first batch is checked for what only data can
        show: labels with a fractional part, a network whose outputs are
        probabilities (a softmax the Distiller could not set aside), and
        inputs on another scale than the teacher's (a warning: the teacher's
        logits are huge or not finite, or integer images reach a teacher
        without a `Rescaling` or `Normalization` layer; see
        `keras_unikd.distiller_checks.check_input_scale`). The batch is read
        without taking it from the training data: the first rows of arrays,
        `take(1)` of a `tf.data.Dataset`, item 0 of a `keras.utils.PyDataset`.
        Python generators, iterators and other data are not checked (reading
        them would consume a batch). Later batches are checked inside the
        compiled steps: labels outside `[0, num_classes)` or with a
        fractional part turn that batch's `loss` into NaN, which the guard
        reports.

        Raises:
            ValueError: when called before `compile`, when `x` or
                `validation_data` yields no batch, or when the first batch
                has fractional labels or a network outputs probabilities.
        """
        if not self.compiled:
            raise ValueError(
                "Call compile(optimizer=..., metrics=[...]) before fit. "
                "Distiller.compile takes no `loss`: the terms are the losses."
            )
        check_not_empty(x, "x")
        check_not_empty(validation_data, "validation_data")
        check_validation_labels(
            validation_data, kwargs.get("validation_batch_size") or batch_size, self.num_classes
        )
        batch = first_batch(x, y, batch_size)
        check_example_indices(self.terms, x, batch)
        if batch is not None:
            student_logits = self._check_first_batch(*batch)
            self._build_training_state(batch[1], student_logits)
        callbacks = list(callbacks or [])
        defaults = (TrainingPlan(epochs=epochs), NonFiniteLossGuard(), DistillationWatch())
        for default in defaults:
            if not any(isinstance(callback, type(default)) for callback in callbacks):
                callbacks.append(default)
        backup = next((c for c in callbacks if isinstance(c, StepBackup)), None)
        if backup is not None:
            data = {key: kwargs.pop(key) for key in DATA_ARGUMENTS if key in kwargs}
            data.update(x=x, y=y, batch_size=batch_size)
            return fit_with_backup(
                self,
                super().fit,
                backup,
                data,
                epochs,
                verbose=verbose,
                callbacks=callbacks,
                validation_data=validation_data,
                **kwargs,
            )
        return super().fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=callbacks,
            validation_data=validation_data,
            **kwargs,
        )

    def _check_first_batch(self, x, y, examples=8):
        """The checks of `fit`'s first batch (see `fit`); the networks see `examples` of it."""
        if y is not None:
            check_integral_labels(y, self.num_classes)
        inputs, carried = self.teacher_source.split(x)
        weak = self._views(inputs)[0]
        sample = keras.tree.map_structure(lambda array: array[:examples], weak)
        teacher_logits = self.teacher_source.first_logits(sample, carried, examples)
        if teacher_logits is not None:
            name = self.teacher.name if self.teacher is not None else "teacher"
            check_logits(teacher_logits, name, "teacher")
        student_logits = ops.convert_to_numpy(self._student_logits(sample, training=False))
        check_logits(student_logits, self.student.name, "student")
        if teacher_logits is not None:
            check_input_scale(weak, teacher_logits, self.teacher)
        return student_logits

    def _build_training_state(self, y, student_logits):
        """Builds the compiled metrics and the optimizer before `fit` traces its step.

        Under TensorFlow without a distribution strategy, Keras builds both
        inside the first trace of the train step, and a `tf.function` that
        creates variables is traced a second time: the first step took about
        twice as long to start. Here the metrics are built eagerly from the
        first batch's labels and the student's logits on its first rows (then
        reset), and the optimizer from the trainable variables, as Keras does
        itself under the other backends and under a strategy.
        """
        if keras.backend.backend() != "tensorflow" or y is None:
            return
        import tensorflow as tf

        under_a_strategy = self.distribute_strategy is not tf.distribute.get_strategy()
        if tf.distribute.has_strategy() or under_a_strategy:
            return
        labels = keras.tree.map_structure(lambda array: array[: len(student_logits)], y)
        self.compute_metrics(None, labels, student_logits)
        self.reset_metrics()
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
        **kwargs,
    ):
        """`keras.Model.evaluate` of the student, with the labels checked.

        Before evaluating, the first batch (read as `fit` reads it) is
        checked for labels that are not integer class ids (strings, a
        fractional part). After it, a NaN loss (the Distiller's mark of labels
        outside `[0, num_classes)`) gives a warning that names the cause and
        the fix; the NaN is still returned. `fit`'s validation, which calls
        `evaluate` with its `keras.callbacks.CallbackList`, is left to the
        `NonFiniteLossGuard`.

        Raises:
            ValueError: when the first batch's labels are strings or have a
                fractional part.
        """
        standalone = not isinstance(callbacks, keras.callbacks.CallbackList)
        if standalone:
            check_evaluation_labels(x, y, batch_size, self.num_classes)
        result = super().evaluate(
            x=x,
            y=y,
            batch_size=batch_size,
            verbose=verbose,
            sample_weight=sample_weight,
            steps=steps,
            callbacks=callbacks,
            return_dict=return_dict,
            **kwargs,
        )
        if standalone:
            warn_about_a_nan_evaluation(self, y)
        return result

    def train_on_batch(self, *args, **kwargs):
        """`keras.Model.train_on_batch`; warns once if a warm-up cannot know its schedule."""
        warmups = [term.warmup_epochs for term in self.terms if term.warmup_epochs]
        if warmups and not float(ops.convert_to_numpy(self.steps_per_epoch)):
            warnings.warn(
                "steps_per_epoch is unknown, so the warm-ups stay at their "
                "first-epoch factor under train_on_batch. Pass "
                "Distiller(..., steps_per_epoch=N) or assign "
                "distiller.steps_per_epoch.",
                stacklevel=2,
            )
        if AUTO_WARMUP in warmups and not float(ops.convert_to_numpy(self.planned_epochs)):
            fallback = float(ops.convert_to_numpy(auto_warmup_epochs(None)))
            warnings.warn(
                f"planned_epochs is unknown, so warmup_epochs={AUTO_WARMUP!r} "
                f"warms up over {fallback:g} epochs (as in a run of 80 epochs "
                "or more) under train_on_batch. Pass "
                "Distiller(..., planned_epochs=N) or assign "
                "distiller.planned_epochs.",
                stacklevel=2,
            )
        return super().train_on_batch(*args, **kwargs)

    def warn_about_long_warmups(self, epochs):
        """Warns for each term whose warm-up (in epochs) outlasts a run of `epochs` epochs.

        `"auto"` warm-ups last at most a quarter of the run and never do.
        """
        for term in self.terms:
            if term.warmup_epochs != AUTO_WARMUP and term.warmup_epochs > epochs:
                warnings.warn(
                    f"Term {term.name!r} warms up over {term.warmup_epochs} "
                    f"epochs but the training runs {epochs}: its losses never "
                    f"get more than {epochs / term.warmup_epochs:.0%} of their "
                    f"weight. Lower its warmup_epochs (the paper warms up "
                    f"over 20 of 240 epochs).",
                    stacklevel=3,
                )

    # ------------------------------------------------------------------
    # Losses (backend-agnostic; Keras's train_step and test_step call them)
    # ------------------------------------------------------------------

    def _sparse_labels(self, y):
        if y is None:
            raise ValueError(
                "The Distiller needs labels: pass (x, y) batches of inputs and "
                "sparse integer class ids."
            )
        shape = tuple(y.shape)
        if len(shape) == 2 and shape[-1] == 1:
            y = ops.squeeze(y, axis=-1)
        elif len(shape) == 2 and shape[-1] == self.num_classes:
            raise ValueError(
                f"Labels have shape {shape}, which looks one-hot; the "
                "Distiller expects sparse integer class ids of shape (batch,). "
                "Convert them with argmax over the last axis."
            )
        elif len(shape) != 1:
            raise ValueError(
                f"Labels have shape {shape}; expected sparse integer class "
                "ids of shape (batch,) or (batch, 1)."
            )
        return ops.cast(y, "int32")

    def _checked_labels(self, y):
        """Sparse labels clipped into range, and whether all are class ids.

        A class id is in `[0, num_classes)` and, for float labels, a whole
        number (3.0, not 3.5, which the cast to int32 would truncate). The
        check is a few tensor ops, so it runs inside compiled steps on
        every backend; the caller turns the batch's loss into NaN when a
        label is not a class id.
        """
        y = ops.convert_to_tensor(y)
        labels = self._sparse_labels(y)
        valid = ops.logical_and(labels >= 0, labels < self.num_classes)
        if "float" in keras.backend.standardize_dtype(y.dtype):
            whole = ops.equal(ops.cast(labels, y.dtype), ops.reshape(y, (-1,)))
            valid = ops.logical_and(valid, whole)
        return ops.clip(labels, 0, self.num_classes - 1), ops.all(valid)

    def _epoch(self):
        """The running epoch, counted from 1, from the step counter."""
        steps = ops.maximum(self.steps_per_epoch, 1.0)
        epoch = ops.floor(self.training_step / steps) + 1.0
        return ops.where(self.steps_per_epoch > 0, epoch, 1.0)

    def _term_losses(self, x, y, student_outputs, sample_weight, training):
        """The terms' losses and their NaN-marked total for one forward record."""
        labels, labels_in_range = self._checked_labels(y)
        # The student's own losses are read before the teacher runs, so that
        # only what the student and the terms add is counted.
        additional = list(self.losses) if self._reports_additional_losses else []
        inputs, carried = self.teacher_source.split(x)
        example_index = require_example_index(self.terms, carried_example_index(x))
        if example_index is not None:
            example_index = ops.cast(ops.reshape(example_index, (-1,)), "int32")
        weak, strong = self._views(inputs)
        if (strong is None) != ("strong" not in student_outputs):
            raise ValueError(
                "The student's outputs and the batch disagree on the number of "
                "views: compute y_pred = distiller(x, training=True) from the "
                "same x."
            )
        teacher_views = self.teacher_source.outputs(weak, strong, carried)
        student_views = [student_outputs]
        if strong is not None:
            student_views.append(student_outputs["strong"])
        record = None
        for teacher, student in reversed(list(zip(teacher_views, student_views))):
            record = ForwardRecord(
                teacher_logits=teacher["logits"],
                student_logits=student["logits"],
                teacher_features=teacher["features"],
                student_features=student["features"],
                labels=labels,
                sample_weight=sample_weight,
                training=bool(training),
                step=ops.convert_to_tensor(self.training_step),
                epoch=self._epoch(),
                strong=record,
                planned_epochs=ops.convert_to_tensor(self.planned_epochs),
                example_index=example_index,
            )
        terms = {}
        for term in self.terms:
            terms.update(term(record))
        if self._reports_additional_losses:
            terms["regularization_loss"] = self._sum(additional)
        return self._total(terms, labels_in_range), terms

    def _sum(self, values):
        if not values:
            return ops.zeros((), "float32")
        return ops.sum(ops.stack([ops.cast(value, "float32") for value in values]))

    def _total(self, terms, labels_in_range):
        return ops.where(labels_in_range, self._sum(list(terms.values())), float("nan"))

    def compute_distillation_losses(self, x, y, sample_weight=None, training=True):
        """Runs teacher and student once and computes every loss term.

        For inspection: the step counter does not advance.

        Args:
            x: Input batch, or a pair `(weak, strong)` of two views.
            y: Sparse integer labels, `(batch,)` or `(batch, 1)`.
            sample_weight: Optional `(batch,)` weights applied to every term.
            training: Whether the student and the terms run in training mode.

        Returns:
            `(total, terms, student_logits)`: the float32 total loss (NaN
            when a label is outside `[0, num_classes)` or has a fractional
            part; the terms are then
            computed on clipped labels and stay finite), a dict of the
            weighted losses named as in `loss_term_names`, and the student's
            logits.
        """
        outputs = self._student_outputs(x, training=training)
        total, terms = self._term_losses(x, y, outputs, sample_weight, training)
        return total, terms, outputs["logits"]

    def compute_student_loss(self, x, y, sample_weight=None):
        """The student's cross-entropy plus its own losses, in inference mode.

        Returns:
            `(loss, student_logits)`; `loss` is NaN when a label is outside
            `[0, num_classes)` or has a fractional part.
        """
        student_logits = self.call(x, training=False)
        return self._student_loss(y, student_logits, sample_weight), student_logits

    def _student_loss(self, y, student_logits, sample_weight):
        labels, labels_in_range = self._checked_labels(y)
        loss = unikd_losses.cross_entropy(student_logits, labels, sample_weight)
        additional = list(self.losses) if self._reports_additional_losses else []
        return ops.where(labels_in_range, loss + self._sum(additional), float("nan"))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The loss Keras's `train_step` / `test_step` minimise or report.

        Training (`y_pred = self(x, training=True)`): the sum of the terms,
        each tracked as a metric, and the step counter advances. Evaluation
        (`y_pred`, the student's logits): the student's cross-entropy.
        Under `tf.distribute` the loss is divided by the number of replicas,
        as Keras's own losses are.
        """
        if not training:
            logits = y_pred["logits"] if isinstance(y_pred, dict) else y_pred
            return self._per_replica(self._student_loss(y, logits, sample_weight))
        if not isinstance(y_pred, dict):
            raise ValueError(
                "Distiller.compute_loss(training=True) needs y_pred = "
                "distiller(x, training=True): the student's logits and tapped "
                "features from one forward pass."
            )
        total, terms = self._term_losses(x, y, y_pred, sample_weight, training)
        batch_size = ops.shape(y_pred["logits"])[0]
        for name, value in terms.items():
            self.loss_term_trackers[name].update_state(value, sample_weight=batch_size)
        self.training_step.assign_add(1.0)
        return self._per_replica(total)

    def _per_replica(self, loss):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            if replicas > 1:
                loss = loss / replicas
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Compiled metrics on the student's logits, and the loss terms in training."""
        training = isinstance(y_pred, dict)
        logits = y_pred["logits"] if training else y_pred
        logs = super().compute_metrics(x, self._sparse_labels(y), logits, sample_weight)
        if not training:
            logs = {
                name: value for name, value in logs.items() if name not in self.loss_term_trackers
            }
        return reducible_logs(logs)

    # ------------------------------------------------------------------
    # Serialization
    # ------------------------------------------------------------------

    def get_config(self):
        steps = int(np.asarray(ops.convert_to_numpy(self.steps_per_epoch)))
        return {
            "name": self.name,
            "trainable": self.trainable,
            "teacher": keras.saving.serialize_keras_object(
                self.teacher if self.teacher is not None else self.teacher_source
            ),
            "student": keras.saving.serialize_keras_object(self.student),
            "terms": [keras.saving.serialize_keras_object(term) for term in self.terms],
            "steps_per_epoch": steps or None,
            "planned_epochs": int(np.asarray(ops.convert_to_numpy(self.planned_epochs))) or None,
            "teacher_token_layouts": self.teacher_token_layouts or None,
            "student_token_layouts": self.student_token_layouts or None,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds a Distiller from `get_config()`.

        `"teacher"` and `"student"` are serialized models, as `get_config`
        writes them, or paths of `.keras` files (a missing file raises
        `FileNotFoundError`); the teacher of a Distiller that trained from a
        cache is a serialized `keras_unikd.teacher_source.CachedTeacher`. A
        config in the keyword form (no `"terms"`) is accepted too.

        Raises:
            ValueError: for a term whose class Keras cannot find (a custom
                term class not registered with
                `keras.saving.register_keras_serializable`, nor given in
                `load_model`'s `custom_objects`), naming the class and the fix
                (see `keras_unikd.distiller_checks.deserialize_term`); for a
                `.keras` path that is not a readable archive.
        """
        config = dict(config)
        for key in ("teacher", "student"):
            if not isinstance(config[key], str):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        if config.get("terms") is not None:
            config["terms"] = [
                deserialize_term(term) for term in config["terms"]
            ]
        return cls(**config)
