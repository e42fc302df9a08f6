"""UniKD's feature terms: AFF + FDP on both networks, constraint and consistency."""

import keras

from keras_unikd import losses
from keras_unikd.layers import DistributionHead
from keras_unikd.layers import MultiStageAggregator
from keras_unikd.layers.aggregator import as_map_shape
from keras_unikd.terms.base import AUTO_FEATURES
from keras_unikd.terms.base import DistillationTerm
from keras_unikd.terms.base import TeacherNeeds
from keras_unikd.terms.base import as_layer_paths
from keras_unikd.terms.base import paths_config
from keras_unikd.validation import check_bool
from keras_unikd.validation import check_choice
from keras_unikd.validation import check_non_negative
from keras_unikd.validation import check_positive


def _check_feature_ranks(side, shapes):
    for path, shape in shapes.items():
        if len(shape) not in (2, 4):
            raise ValueError(
                f"Tapped {side} layer {path!r} outputs shape {tuple(shape)} "
                f"(rank {len(shape)}); UniKD features must be channels-last "
                "maps (batch, H, W, C), token features (batch, tokens, C), "
                "which the tap reads as maps, or vectors (batch, C). Tap "
                "another layer."
            )


@keras.saving.register_keras_serializable(package="keras_unikd")
class UniKDFeatures(DistillationTerm):
    """UniKD's feature distillation (Huang et al., ECCV 2024).

    The student's tapped stages are fused by a `MultiStageAggregator` (AFF;
    its output takes the shape of the teacher's first tapped feature) and a
    `DistributionHead` (FDP) turns the fused map into a Gaussian over the
    classes; the teacher's tapped feature goes through a head of its own (or
    through an aggregator too, when several teacher features are tapped).
    The teacher's head and aggregator train with the student, as in the
    reference. Two losses:

    - `feature_loss = feature_weight * D(student_dist, teacher_dist)`, with
      `D` the KD loss on one Gaussian sample per side at `temperature`
      (`distribution_loss="sampled"`, the reference) or the closed-form KL
      `KL(N_t || N_s)` (`"gaussian"`, deterministic: the heads do not sample);
    - `consistency_loss = consistency_weight * (KD(z_s, student_logits) +
      KD(z_t, teacher_logits))` at `temperature`, each distribution tied to
      its own network's logits.

    Here `KD(a, b) = T^2 * KL(softmax(b / T) || softmax(a / T))`. With
    `logit_standardization=True` every such KD z-scores both of its vectors
    over the classes first, `softmax(zscore(v) / T)` with `zscore(v) =
    (v - mean(v)) / (1e-7 + std(v))` (Sun et al., CVPR 2024;
    `keras_unikd.losses.standardize_logits`): the sampled constraint and
    both consistency KDs (the samples `z`, or the means `mu` when the heads
    do not sample, are logit-like vectors over the classes). It does not apply to
    the closed form `KL(N_t || N_s)`, which takes no softmax. No published
    recipe combines UniKD with standardization: the reference's values for
    KD and DKD (`temperature=2`, KD weight 9 on CIFAR-100; see `KD` and `DKD`)
    are the only ones documented.

    Token features `(batch, tokens, C)` (transformers) reach the term as
    maps: the Distiller's tap reads them as a patch grid or a sequence
    (`keras_unikd.tokens`).

    Args:
        teacher_features: Teacher layer path(s), shallow to deep, or
            `"auto"`: the Distiller taps the ends of the teacher's deepest
            stages and its pooled vector (`keras_unikd.auto_taps`) and sets
            the chosen paths here, so that `get_config` holds them.
        student_features: Student layer path(s), shallow to deep (pooled
            vectors are allowed), or `"auto"`.
        distribution_loss: `"sampled"` or `"gaussian"`.
        feature_weight: Weight of the distribution constraint.
        consistency_weight: Weight of the consistency term.
        temperature: Temperature of the sampled constraint and of the
            consistency term (`T_dist`, 1 in the reference).
        fuse_teacher_features: Whether an aggregator fuses the teacher's
            features (default: when more than one is tapped).
        fuse_student_features: The same for the student.
        aggregator_mid_channels: Mid width of the aggregators (default
            `min(512, channels of the deepest input)`).
        log_var_range: Clip bounds of the log-variances in the closed form.
        seed: Optional int seed of the heads' sampling noise (the student's
            head uses `seed`, the teacher's `seed + 1`).
        logit_standardization: Whether every softmax KD of the term (the
            sampled constraint, the consistency term) z-scores its vectors
            first; the closed form is unaffected.
        **kwargs: `DistillationTerm` arguments (`weight`, `warmup_epochs`,
            `name`).

    Example:

    ```python
    distiller = keras_unikd.Distiller(
        teacher, student,
        terms=[
            terms.CrossEntropy(),
            terms.DKD(beta=8.0, warmup_epochs=20),
            terms.UniKDFeatures(
                teacher_features=["stage1_preact"],
                student_features=["stage1", "stage2", "stage3", "pool"],
            ),
        ],
    )
    ```
    """

    def __init__(
        self,
        teacher_features,
        student_features,
        distribution_loss="sampled",
        feature_weight=1.0,
        consistency_weight=1.0,
        temperature=1.0,
        fuse_teacher_features=None,
        fuse_student_features=None,
        aggregator_mid_channels=None,
        log_var_range=losses.DEFAULT_LOG_VAR_RANGE,
        seed=None,
        logit_standardization=False,
        name="unikd",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        check_choice("distribution_loss", distribution_loss, losses.DISTRIBUTION_FORMS)
        check_non_negative("feature_weight", feature_weight)
        check_non_negative("consistency_weight", consistency_weight)
        check_positive("UniKDFeatures temperature", temperature)
        check_bool("UniKDFeatures logit_standardization", logit_standardization)
        self.teacher_features = as_layer_paths(
            teacher_features, "teacher_features", allow_auto=True
        )
        self.student_features = as_layer_paths(
            student_features, "student_features", allow_auto=True
        )
        if not self.teacher_features or not self.student_features:
            raise ValueError(
                "UniKD's feature terms need at least one teacher feature and "
                "one student feature (layer names); got "
                f"teacher_features={list(self.teacher_features)}, "
                f"student_features={list(self.student_features)}."
            )
        self.distribution_loss = distribution_loss
        self.feature_weight = feature_weight
        self.consistency_weight = consistency_weight
        self.temperature = temperature
        self.fuse_teacher_features = fuse_teacher_features
        self.fuse_student_features = fuse_student_features
        self.aggregator_mid_channels = aggregator_mid_channels
        self.log_var_range = tuple(log_var_range)
        self.seed = seed
        self.logit_standardization = logit_standardization

    @property
    def loss_names(self):
        prefix = "" if self.name == "unikd" else f"{self.name}_"
        return (f"{prefix}feature_loss", f"{prefix}consistency_loss")

    def tuning_hint(self, loss_name):
        setting = "consistency_weight" if loss_name.endswith("consistency_loss") else (
            "feature_weight"
        )
        return f"its {setting} (UniKDFeatures({setting}={getattr(self, setting):g}) now)"

    def teacher_needs(self):
        """The teacher's logits and pooled feature, unless its side fuses stages.

        With one teacher feature and no teacher-side aggregator, the
        teacher's `DistributionHead` reads the feature only through its
        pooling (`DistributionHead.pool`), so a cache holds the pooled vector;
        the consistency term reads the teacher's logits. A teacher-side
        `MultiStageAggregator` (several teacher features, or
        `fuse_teacher_features=True`) reads the full maps, and `"auto"`
        features are chosen (usually several stages, fused) only by a
        Distiller: neither is cacheable.
        """
        kind = f"term {self.name!r} (UniKDFeatures)"
        if self.teacher_features == AUTO_FEATURES:
            reason = (
                f"{kind} has teacher_features='auto', chosen by the Distiller (usually "
                "several stages, fused by an aggregator); name one teacher layer to cache it"
            )
        elif self.fuse_teacher_features or len(self.teacher_features) > 1:
            reason = (
                f"{kind} fuses the teacher's full feature maps "
                f"{list(self.teacher_features)!r} with a teacher-side MultiStageAggregator, "
                "which trains with the student"
            )
        else:
            return TeacherNeeds(
                logits=True, pooled_features=self.teacher_features, views=self.views
            )
        maps = () if self.teacher_features == AUTO_FEATURES else self.teacher_features
        return TeacherNeeds(logits=True, feature_maps=maps, views=self.views, reason=reason)

    def _aggregator(self, shapes, fuse, reference_shape, side):
        if fuse is None:
            fuse = len(shapes) > 1
        if not fuse:
            if len(shapes) > 1:
                raise ValueError(
                    f"{side}_aggregator: several {side} features were tapped but "
                    "fusion is off, so all but the first would be ignored. "
                    f"Set fuse_{side}_features=True or tap one feature."
                )
            return None
        height, width, channels = reference_shape
        aggregator = MultiStageAggregator(
            output_channels=channels,
            output_size=(height, width),
            mid_channels=self.aggregator_mid_channels,
            dtype=self.dtype_policy,
            name=f"{side}_aggregator",
        )
        aggregator.build(shapes)
        return aggregator

    def build(self, shapes):
        if AUTO_FEATURES in (self.teacher_features, self.student_features):
            raise ValueError(
                "teacher_features or student_features is 'auto', which the "
                "Distiller resolves from the models before it builds the "
                "term. Use the term in a Distiller, or give layer names."
            )
        teacher = {path: shapes.teacher[path] for path in self.teacher_features}
        student = {path: shapes.student[path] for path in self.student_features}
        _check_feature_ranks("teacher", teacher)
        _check_feature_ranks("student", student)
        teacher_shapes, student_shapes = list(teacher.values()), list(student.values())
        # The student's fused map takes the shape of the teacher's first
        # (shallowest) tapped feature, as in the reference.
        reference = as_map_shape(teacher_shapes[0])[1:]
        self.teacher_aggregator = self._aggregator(
            teacher_shapes, self.fuse_teacher_features, reference, "teacher"
        )
        self.student_aggregator = self._aggregator(
            student_shapes, self.fuse_student_features, reference, "student"
        )
        for side, side_shapes, aggregator, offset in (
            ("teacher", teacher_shapes, self.teacher_aggregator, 1),
            ("student", student_shapes, self.student_aggregator, 0),
        ):
            head = DistributionHead(
                shapes.num_classes,
                seed=None if self.seed is None else self.seed + offset,
                dtype=self.dtype_policy,
                name=f"{side}_head",
            )
            head.build(
                aggregator.compute_output_shape(side_shapes) if aggregator else side_shapes[0]
            )
            setattr(self, f"{side}_head", head)

    def _distribution(self, head, aggregator, features, sample):
        fused = aggregator(features) if aggregator is not None else features[0]
        return head(fused, sample=sample)

    def call(self, record):
        sample = self.distribution_loss == "sampled" and record.training
        student = self._distribution(
            self.student_head,
            self.student_aggregator,
            [record.student_features[path] for path in self.student_features],
            sample,
        )
        teacher = self._distribution(
            self.teacher_head,
            self.teacher_aggregator,
            [record.teacher_features[path] for path in self.teacher_features],
            sample,
        )
        feature_loss = losses.distribution_loss(
            student,
            teacher,
            form=self.distribution_loss,
            temperature=self.temperature,
            log_var_range=self.log_var_range,
            sample_weight=record.sample_weight,
            standardize=self.logit_standardization,
        )
        consistency_loss = losses.kd_loss(
            student["z"],
            record.student_logits,
            self.temperature,
            record.sample_weight,
            standardize=self.logit_standardization,
        ) + losses.kd_loss(
            teacher["z"],
            record.teacher_logits,
            self.temperature,
            record.sample_weight,
            standardize=self.logit_standardization,
        )
        feature_name, consistency_name = self.loss_names
        return {
            feature_name: self.feature_weight * feature_loss,
            consistency_name: self.consistency_weight * consistency_loss,
        }

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_features": paths_config(self.teacher_features),
            "student_features": paths_config(self.student_features),
            "distribution_loss": self.distribution_loss,
            "feature_weight": self.feature_weight,
            "consistency_weight": self.consistency_weight,
            "temperature": self.temperature,
            "fuse_teacher_features": self.fuse_teacher_features,
            "fuse_student_features": self.fuse_student_features,
            "aggregator_mid_channels": self.aggregator_mid_channels,
            "log_var_range": list(self.log_var_range),
            "seed": self.seed,
            "logit_standardization": self.logit_standardization,
        }
