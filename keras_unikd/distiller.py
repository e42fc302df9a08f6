"""The UniKD Distiller: a `keras.Model` that trains a student from a frozen teacher."""

import keras
from keras import ops

from keras_unikd import losses as unikd_losses
from keras_unikd.callbacks import EpochCounter
from keras_unikd.callbacks import NonFiniteLossGuard
from keras_unikd.layers import DistributionHead
from keras_unikd.layers import MultiStageAggregator
from keras_unikd.layers.aggregator import as_map_shape
from keras_unikd.taps import FeatureTap
from keras_unikd.trainers import DistillerSteps
from keras_unikd.validation import check_choice
from keras_unikd.validation import check_no_shared_weights
from keras_unikd.validation import check_not_empty
from keras_unikd.validation import load_model_argument

LOGITS_LOSSES = ("dkd", "kd")


@keras.saving.register_keras_serializable(package="keras_unikd")
class Distiller(DistillerSteps, keras.Model):
    """Trains a student from a frozen teacher with UniKD (ECCV 2024).

    Each training step runs the teacher (inference mode, frozen, no gradient)
    and the student once each, tapping their logits and the named stage
    features. Student stages are fused by a `MultiStageAggregator` and turned
    by a `DistributionHead` into a Gaussian over the classes; the teacher's
    tapped feature(s) go through a head of their own, which trains with the
    student. The optimised loss is the sum of four terms:

    - `ce_loss = ce_weight * CE(student_logits, labels)`
    - `<logits_loss>_loss = logits_weight * min(epoch / warmup_epochs, 1) *
      DKD (or KD)(student_logits, teacher_logits)`
    - `feature_loss = feature_weight * D(student_dist, teacher_dist)`
    - `consistency_loss = consistency_weight * (KD(z_s, student_logits) +
      KD(z_t, teacher_logits))`, each distribution tied to its own logits,

    plus the student's regularisation losses (`regularization_loss`, when it
    has any). `D` is `kd_loss` on one Gaussian sample per side
    (`distribution_loss="sampled"`, the reference) or the closed-form
    Gaussian KL (`"gaussian"`, deterministic: heads do not sample). Every
    term, weighted as it enters the total, is a metric in the progress bar
    and in `History`. With `distribution_loss=None` and no features the
    Distiller is plain KD or DKD.

    `call(x)` is the student, so `evaluate` and `predict` use it alone;
    `test_step` reports the student's cross-entropy as `loss` and the
    compiled metrics. `fit` adds an `EpochCounter` callback that drives the
    warm-up and a `NonFiniteLossGuard` that stops training, with a message,
    at the first non-finite loss. Labels are sparse integer class ids in
    `[0, num_classes)`; a batch with a label outside that range gets a NaN
    `loss` (its terms stay finite), which the guard reports as a label error.

    Args:
        teacher: Trained functional or Sequential `keras.Model` with a single
            logits output, or the path of one saved as `.keras`. It is frozen
            (`trainable = False`) here.
        student: Functional or Sequential `keras.Model` (or a `.keras` path),
            same input shape and number of classes as the teacher, sharing
            no layer with it.
        teacher_features: Layer names (shallow to deep) tapped in the teacher;
            `"outer/inner"` reaches inside a nested model.
        student_features: Layer names tapped in the student, shallow to deep;
            rank-2 outputs (pooled vectors) are allowed.
        logits_loss: `"dkd"`, `"kd"` or `None`.
        distribution_loss: `"sampled"`, `"gaussian"` or `None` (no feature
            distillation; then no features may be given).
        ce_weight: Weight of the cross-entropy term.
        logits_weight: Weight of the logits term.
        feature_weight: Weight of the distribution constraint.
        consistency_weight: Weight of the consistency term.
        temperature: Temperature of the logits loss.
        distribution_temperature: Temperature of the sampled distribution
            constraint and of the consistency term.
        dkd_alpha: DKD's target-class weight.
        dkd_beta: DKD's non-target weight (8 for ResNet32x4->ResNet8x4, 2 for
            ResNet56->20 and ResNet110->32, 6 for WRN/VGG pairs).
        warmup_epochs: Epochs of linear warm-up of the logits loss; 0 turns
            the warm-up off.
        fuse_teacher_features: Whether a `MultiStageAggregator` fuses the
            teacher's features. Defaults to `True` when more than one teacher
            feature is tapped; a single feature feeds its head directly.
        fuse_student_features: The same for the student.
        aggregator_mid_channels: Mid width of the aggregators (default
            `min(512, channels of the deepest input)`).
        log_var_range: Clip bounds of the log-variances in the closed form.
        seed: Optional int seed of the heads' sampling noise.
        **kwargs: Base `keras.Model` arguments (`name`, ...).

    Raises:
        ValueError: for unknown layer names (the message lists the layers
            that exist), teacher and student with different input shapes or
            class counts, a student sharing layers with the teacher, tapped
            features that are not maps or vectors, or inconsistent options.
        FileNotFoundError: for a teacher or student path that does not exist.

    Example:

    ```python
    import keras, keras_unikd

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
    distiller = keras_unikd.Distiller(
        teacher=teacher,
        student=student,
        teacher_features=["t_stage1"],
        student_features=["s_stage1", "s_stage2", "s_pool"],
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
        teacher_features=None,
        student_features=None,
        logits_loss="dkd",
        distribution_loss="sampled",
        ce_weight=1.0,
        logits_weight=1.0,
        feature_weight=1.0,
        consistency_weight=1.0,
        temperature=4.0,
        distribution_temperature=1.0,
        dkd_alpha=1.0,
        dkd_beta=8.0,
        warmup_epochs=20,
        fuse_teacher_features=None,
        fuse_student_features=None,
        aggregator_mid_channels=None,
        log_var_range=unikd_losses.DEFAULT_LOG_VAR_RANGE,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        teacher = load_model_argument(teacher, "teacher")
        student = load_model_argument(student, "student")
        teacher_features = list(teacher_features or [])
        student_features = list(student_features or [])
        self._validate_options(
            teacher_features, student_features, logits_loss, distribution_loss
        )
        self.teacher = teacher
        self.student = student
        self.teacher_features = teacher_features
        self.student_features = student_features
        self.logits_loss = logits_loss
        self.distribution_loss = distribution_loss
        self.ce_weight = ce_weight
        self.logits_weight = logits_weight
        self.feature_weight = feature_weight
        self.consistency_weight = consistency_weight
        self.temperature = temperature
        self.distribution_temperature = distribution_temperature
        self.dkd_alpha = dkd_alpha
        self.dkd_beta = dkd_beta
        self.warmup_epochs = warmup_epochs
        self.fuse_teacher_features = fuse_teacher_features
        self.fuse_student_features = fuse_student_features
        self.aggregator_mid_channels = aggregator_mid_channels
        self.log_var_range = tuple(log_var_range)
        self.seed = seed

        self._teacher_tap = FeatureTap(teacher, teacher_features)
        self._student_tap = FeatureTap(student, student_features)
        self._validate_models()
        teacher.trainable = False
        self.num_classes = self._student_tap.logits_shape[-1]
        self._build_feature_modules()

        self.current_epoch = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(1.0),
            dtype="float32",
            trainable=False,
            name="current_epoch",
        )
        self.loss_term_trackers = {
            name: keras.metrics.Mean(name=name) for name in self.loss_term_names
        }
        self.built = True

    # ------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------

    def _validate_options(
        self, teacher_features, student_features, logits_loss, distribution_loss
    ):
        check_choice("logits_loss", logits_loss, LOGITS_LOSSES + (None,))
        check_choice(
            "distribution_loss",
            distribution_loss,
            unikd_losses.DISTRIBUTION_FORMS + (None,),
        )
        if distribution_loss is None:
            if teacher_features or student_features:
                raise ValueError(
                    "Features were given but distribution_loss=None, so they "
                    "would be ignored. Set distribution_loss='sampled' or "
                    "'gaussian', or drop teacher_features/student_features."
                )
            if logits_loss is None:
                raise ValueError(
                    "logits_loss=None and distribution_loss=None leave nothing "
                    "to distil. Train the student alone with student.fit, or "
                    "choose a loss."
                )
        elif not teacher_features or not student_features:
            raise ValueError(
                f"distribution_loss={distribution_loss!r} needs at least one "
                "teacher feature and one student feature (layer names); got "
                f"teacher_features={teacher_features}, "
                f"student_features={student_features}."
            )

    def _validate_models(self):
        check_no_shared_weights(self.teacher, self.student)
        teacher_input = tuple(self.teacher.inputs[0].shape[1:])
        student_input = tuple(self.student.inputs[0].shape[1:])
        if teacher_input != student_input:
            raise ValueError(
                f"Teacher input shape {teacher_input} differs from student "
                f"input shape {student_input}; both must read the same batch."
            )
        for tap in (self._teacher_tap, self._student_tap):
            if len(tap.logits_shape) != 2:
                raise ValueError(
                    f"Model {tap.model.name!r} outputs shape {tap.logits_shape}; "
                    "expected logits of shape (batch, num_classes)."
                )
        teacher_classes = self._teacher_tap.logits_shape[-1]
        student_classes = self._student_tap.logits_shape[-1]
        if teacher_classes != student_classes:
            raise ValueError(
                f"Teacher has {teacher_classes} classes but student has "
                f"{student_classes}; distillation needs the same classes."
            )
        for tap in (self._teacher_tap, self._student_tap):
            for path, shape in zip(tap.feature_paths, tap.feature_shapes):
                if len(shape) not in (2, 4):
                    raise ValueError(
                        f"Tapped layer {path!r} of {tap.model.name!r} outputs "
                        f"shape {shape} (rank {len(shape)}); features must be "
                        "channels-last maps (batch, H, W, C) or vectors "
                        "(batch, C). Tap another layer."
                    )

    def _make_aggregator(self, feature_shapes, fuse, reference_shape, name):
        if fuse is None:
            fuse = len(feature_shapes) > 1
        if not fuse:
            if len(feature_shapes) > 1:
                raise ValueError(
                    f"{name}: several features were tapped but fusion is off, "
                    "so all but the first would be ignored. Enable fusion or "
                    "tap one feature."
                )
            return None
        height, width, channels = reference_shape
        aggregator = MultiStageAggregator(
            output_channels=channels,
            output_size=(height, width),
            mid_channels=self.aggregator_mid_channels,
            name=name,
        )
        aggregator.build(feature_shapes)
        return aggregator

    def _build_feature_modules(self):
        """Builds the layers of the feature terms: aggregators and heads."""
        self.teacher_aggregator = self.student_aggregator = None
        self.teacher_head = self.student_head = None
        if self.distribution_loss is None:
            return
        teacher_shapes = self._teacher_tap.feature_shapes
        student_shapes = self._student_tap.feature_shapes
        # The student's fused map takes the shape of the teacher's first
        # (shallowest) tapped feature, as in the reference.
        reference = as_map_shape(teacher_shapes[0])[1:]
        self.teacher_aggregator = self._make_aggregator(
            teacher_shapes, self.fuse_teacher_features, reference, "teacher_aggregator"
        )
        self.student_aggregator = self._make_aggregator(
            student_shapes, self.fuse_student_features, reference, "student_aggregator"
        )
        for side, shapes, aggregator in (
            ("teacher", teacher_shapes, self.teacher_aggregator),
            ("student", student_shapes, self.student_aggregator),
        ):
            head_seed = None if self.seed is None else self.seed + (side == "teacher")
            head = DistributionHead(self.num_classes, seed=head_seed, name=f"{side}_head")
            head.build(
                aggregator.compute_output_shape(shapes) if aggregator else shapes[0]
            )
            setattr(self, f"{side}_head", head)

    @property
    def loss_term_names(self):
        """Names of the loss terms this configuration reports, in order."""
        names = ["ce_loss"]
        if self.logits_loss is not None:
            names.append(f"{self.logits_loss}_loss")
        names += self._feature_term_names()
        if any(weight.regularizer is not None for weight in self.student.trainable_weights):
            names.append("regularization_loss")
        return names

    def _feature_term_names(self):
        if self.distribution_loss is None:
            return []
        return ["feature_loss", "consistency_loss"]

    # ------------------------------------------------------------------
    # Keras API
    # ------------------------------------------------------------------

    def call(self, inputs, training=False):
        """The student's logits."""
        return self.student(inputs, training=training)

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training; see `keras.Model.compile`.

        The losses are defined by the constructor, so `loss` must stay `None`:
        the student's task loss is the sparse categorical cross-entropy on its
        logits, weighted by `ce_weight`. `metrics` are computed on the
        student's logits in training and evaluation.
        """
        if loss is not None:
            raise ValueError(
                "Distiller.compile does not take a `loss`: the losses are set "
                "by the Distiller's constructor (ce_weight, logits_loss, "
                "distribution_loss, ...). Remove `loss=`."
            )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a loaded Distiller with its saved optimizer and metrics."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto",
            callbacks=None, *, validation_data=None, **kwargs):
        """`keras.Model.fit`, with the Distiller's own callbacks and checks.

        Adds an `EpochCounter` (the logits warm-up) and a
        `NonFiniteLossGuard` unless `callbacks` holds one already (pass
        `NonFiniteLossGuard(raise_error=True)` to raise rather than stop).

        Raises:
            ValueError: when called before `compile`, or when `x` or
                `validation_data` yields no batch.
        """
        if not self.compiled:
            raise ValueError(
                "Call compile(optimizer=..., metrics=[...]) before fit. "
                "Distiller.compile takes no `loss`: the constructor defines "
                "the losses."
            )
        check_not_empty(x, "x")
        check_not_empty(validation_data, "validation_data")
        callbacks = list(callbacks or [])
        for callback_class in (EpochCounter, NonFiniteLossGuard):
            if not any(isinstance(callback, callback_class) for callback in callbacks):
                callbacks.append(callback_class())
        return super().fit(
            x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
            callbacks=callbacks, validation_data=validation_data, **kwargs
        )

    # ------------------------------------------------------------------
    # Training computations (backend-agnostic; the gradient step is in
    # keras_unikd.trainers)
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
        """Sparse labels clipped into range, and whether all were in range.

        The check is a few tensor ops, so it runs inside compiled steps on
        every backend; the caller turns the batch's loss into NaN when a
        label is out of range.
        """
        labels = self._sparse_labels(y)
        in_range = ops.all(
            ops.logical_and(labels >= 0, labels < self.num_classes)
        )
        return ops.clip(labels, 0, self.num_classes - 1), in_range

    def _add_regularization(self, terms):
        if "regularization_loss" in self.loss_term_names:
            terms["regularization_loss"] = ops.sum(
                [ops.cast(loss, "float32") for loss in self.student.losses]
            )
        return terms

    def _fuse(self, aggregator, features):
        return aggregator(features) if aggregator is not None else features[0]

    def _warmup_factor(self):
        if not self.warmup_epochs:
            return 1.0
        return ops.minimum(self.current_epoch / float(self.warmup_epochs), 1.0)

    def _logits_term(self, student_logits, teacher_logits, labels, sample_weight):
        if self.logits_loss == "dkd":
            return unikd_losses.dkd_loss(
                student_logits,
                teacher_logits,
                labels,
                alpha=self.dkd_alpha,
                beta=self.dkd_beta,
                temperature=self.temperature,
                sample_weight=sample_weight,
            )
        return unikd_losses.kd_loss(
            student_logits, teacher_logits, self.temperature, sample_weight=sample_weight
        )

    def _feature_terms(
        self,
        student_features,
        teacher_features,
        student_logits,
        teacher_logits,
        sample_weight,
        training,
    ):
        """UniKD's distribution constraint and consistency terms."""
        if self.distribution_loss is None:
            return {}
        sample = self.distribution_loss == "sampled" and training
        student_dist = self.student_head(
            self._fuse(self.student_aggregator, student_features), sample=sample
        )
        teacher_dist = self.teacher_head(
            self._fuse(self.teacher_aggregator, teacher_features), sample=sample
        )
        feature_loss = self.feature_weight * unikd_losses.distribution_loss(
            student_dist,
            teacher_dist,
            form=self.distribution_loss,
            temperature=self.distribution_temperature,
            log_var_range=self.log_var_range,
            sample_weight=sample_weight,
        )
        consistency_loss = self.consistency_weight * (
            unikd_losses.kd_loss(
                student_dist["z"],
                student_logits,
                self.distribution_temperature,
                sample_weight=sample_weight,
            )
            + unikd_losses.kd_loss(
                teacher_dist["z"],
                teacher_logits,
                self.distribution_temperature,
                sample_weight=sample_weight,
            )
        )
        return {"feature_loss": feature_loss, "consistency_loss": consistency_loss}

    def compute_distillation_losses(self, x, y, sample_weight=None, training=True):
        """Runs teacher and student once and computes every loss term.

        Args:
            x: Input batch.
            y: Sparse integer labels, `(batch,)` or `(batch, 1)`.
            sample_weight: Optional `(batch,)` weights applied to every term.
            training: Whether the student and the heads run in training mode.

        Returns:
            `(total, terms, student_logits)`: the float32 total loss (NaN
            when a label is outside `[0, num_classes)`; the terms are then
            computed on clipped labels and stay finite), a dict of the
            weighted terms named as in `loss_term_names`, and the student's
            logits.
        """
        labels, labels_in_range = self._checked_labels(y)
        teacher_logits, teacher_features = self._teacher_tap(x, training=False)
        teacher_logits = ops.stop_gradient(teacher_logits)
        teacher_features = [ops.stop_gradient(feature) for feature in teacher_features]
        student_logits, student_features = self._student_tap(x, training=training)

        terms = {
            "ce_loss": self.ce_weight
            * unikd_losses.cross_entropy(student_logits, labels, sample_weight)
        }
        if self.logits_loss is not None:
            terms[f"{self.logits_loss}_loss"] = (
                self.logits_weight
                * self._warmup_factor()
                * self._logits_term(student_logits, teacher_logits, labels, sample_weight)
            )
        terms.update(
            self._feature_terms(
                student_features,
                teacher_features,
                student_logits,
                teacher_logits,
                sample_weight,
                training,
            )
        )
        self._add_regularization(terms)
        return self._total(terms, labels_in_range), terms, student_logits

    def _total(self, terms, labels_in_range):
        total = ops.sum(ops.stack(list(terms.values())))
        return ops.where(labels_in_range, total, float("nan"))

    def compute_student_loss(self, x, y, sample_weight=None):
        """The student's cross-entropy (plus regularisation) in inference mode.

        Returns:
            `(loss, student_logits)`; `loss` is NaN when a label is outside
            `[0, num_classes)`.
        """
        labels, labels_in_range = self._checked_labels(y)
        student_logits = self.student(x, training=False)
        terms = {"ce_loss": unikd_losses.cross_entropy(student_logits, labels, sample_weight)}
        self._add_regularization(terms)
        return self._total(terms, labels_in_range), student_logits

    def _batch_size(self, logits):
        return ops.shape(logits)[0]

    def update_train_metrics(self, total, terms, y, student_logits, sample_weight=None):
        """Updates the loss trackers and compiled metrics; returns the logs."""
        batch_size = self._batch_size(student_logits)
        self._loss_tracker.update_state(total, sample_weight=batch_size)
        for name, value in terms.items():
            self.loss_term_trackers[name].update_state(value, sample_weight=batch_size)
        return self.compute_metrics(
            None, self._sparse_labels(y), student_logits, sample_weight
        )

    def update_test_metrics(self, loss, y, student_logits, sample_weight=None):
        """Updates `loss` and the compiled metrics; returns the logs."""
        self._loss_tracker.update_state(
            loss, sample_weight=self._batch_size(student_logits)
        )
        logs = self.compute_metrics(
            None, self._sparse_labels(y), student_logits, sample_weight
        )
        return {name: value for name, value in logs.items() if name not in self.loss_term_trackers}

    # ------------------------------------------------------------------
    # Serialization
    # ------------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher_features": self.teacher_features,
            "student_features": self.student_features,
            "logits_loss": self.logits_loss,
            "distribution_loss": self.distribution_loss,
            "ce_weight": self.ce_weight,
            "logits_weight": self.logits_weight,
            "feature_weight": self.feature_weight,
            "consistency_weight": self.consistency_weight,
            "temperature": self.temperature,
            "distribution_temperature": self.distribution_temperature,
            "dkd_alpha": self.dkd_alpha,
            "dkd_beta": self.dkd_beta,
            "warmup_epochs": self.warmup_epochs,
            "fuse_teacher_features": self.fuse_teacher_features,
            "fuse_student_features": self.fuse_student_features,
            "aggregator_mid_channels": self.aggregator_mid_channels,
            "log_var_range": self.log_var_range,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds a Distiller from `get_config()`.

        `"teacher"` and `"student"` are serialized models, as `get_config`
        writes them, or paths of `.keras` files (a missing file raises
        `FileNotFoundError`).
        """
        config = dict(config)
        for key in ("teacher", "student"):
            if not isinstance(config[key], str):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
