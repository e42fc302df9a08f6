"""The distillation methods: one table, from settings to a list of terms.

A `Method` is a function from settings to a list of
`keras_unikd.terms.DistillationTerm`s, plus the number of views per example
its batches hold. Its defaults are the reference code's CIFAR-100 settings
(mdistiller's `engine/cfg.py` and each method's authors' code); a preset
(`keras_unikd.presets`) overrides the ones its pair changes. A `Variant`
(logit standardization's `+ls`, UniKD's ablations, FitNet + KD) is a
function from a term list to a term list, applied to its method's terms.

Everything that names a method builds its terms here: the presets, the
`Distiller`'s keyword form, the command line, the examples and the
benchmarks. A new method is one entry of `METHODS` (and a term file under
`keras_unikd/terms/` when it needs a new loss).

Settings names are those of the `Distiller`'s keyword form: `ce_weight`,
`logits_weight`, `temperature`, `warmup_epochs`, `logit_standardization`,
`views`; `dkd_alpha`, `dkd_beta`; `mlkd_temperatures`, `mlkd_level_weights`;
UniKD's `teacher_features`, `student_features`, `distribution_loss`,
`feature_weight`, `consistency_weight`, `distribution_temperature`,
`fuse_teacher_features`, `fuse_student_features`, `aggregator_mid_channels`,
`log_var_range`, `seed` and `logits_loss` (the logits method under it);
FitNet's `teacher_feature`, `student_feature`, `hint_weight`; CRD's
`train_labels` (the training set's labels, from the data); the feature
methods' `feature_weight` (AT, SP, PKT, RKD, ...) and their taps, `"auto"`
by default (`keras_unikd.auto_taps`: each term keeps the layers its method
reads).

Example:

>>> [type(term).__name__ for term in method_terms("dkd", dkd_beta=2.0)]
['CrossEntropy', 'DKD']
>>> method_terms("dkd", dkd_beta=2.0)[1].beta
2.0
>>> [type(term).__name__ for term in method_terms(
...     "unikd", teacher_features=["t1"], student_features=["s1", "s2"])]
['CrossEntropy', 'DKD', 'UniKDFeatures']
>>> terms = method_terms("kd+ls")
>>> terms[1].temperature, terms[1].weight, terms[1].logit_standardization
(2.0, 9.0, True)
"""

import dataclasses
import inspect
import types
import typing
import warnings

from keras_unikd import terms as t
from keras_unikd.validation import check_choice

# MLKD's prediction augmentation: its temperatures, the first the base one.
MLKD_TEMPERATURES = (4.0, 3.0, 5.0, 2.0, 6.0)


# ----------------------------------------------------------------------
# The methods: settings -> terms
# ----------------------------------------------------------------------


def student_terms(*, ce_weight=1.0, views=1):
    """The student alone: its cross-entropy (no teacher)."""
    return [t.CrossEntropy(weight=ce_weight, views=views)]


def kd_terms(
    *,
    ce_weight=0.1,
    logits_weight=0.9,
    temperature=4.0,
    warmup_epochs=0,
    logit_standardization=False,
    views=1,
):
    """Hinton's KD (mdistiller's CIFAR-100 settings: CE 0.1, KD 0.9, T = 4)."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.KD(
            temperature=temperature,
            weight=logits_weight,
            warmup_epochs=warmup_epochs,
            logit_standardization=logit_standardization,
            views=views,
        ),
    ]


def dkd_terms(
    *,
    ce_weight=1.0,
    logits_weight=1.0,
    temperature=4.0,
    dkd_alpha=1.0,
    dkd_beta=8.0,
    warmup_epochs=20,
    logit_standardization=False,
    views=1,
):
    """DKD (mdistiller: alpha 1, beta 8, T = 4, 20 warm-up epochs)."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.DKD(
            alpha=dkd_alpha,
            beta=dkd_beta,
            temperature=temperature,
            weight=logits_weight,
            warmup_epochs=warmup_epochs,
            logit_standardization=logit_standardization,
            views=views,
        ),
    ]


def mlkd_terms(
    *,
    ce_weight=0.1,
    logits_weight=0.9,
    temperature=MLKD_TEMPERATURES[0],
    mlkd_temperatures=None,
    mlkd_level_weights=None,
    mlkd_level_scaling="balanced",
    warmup_epochs=0,
    logit_standardization=False,
    views=2,
):
    """MLKD (its code: CE 0.1 and MLKD 0.9 on both views, temperatures 4, 3, 5, 2, 6).

    `mlkd_temperatures` defaults to `temperature` followed by MLKD's others
    (the logit-standardization reference's `--base-temp` replaces the
    first); `mlkd_level_weights` is `(instance, class, batch)`;
    `mlkd_level_scaling` is `terms.MLKD`'s `level_scaling` (`"balanced"`
    for any batch size and class count; the presets use `"reference"`).
    """
    if mlkd_temperatures is None:
        mlkd_temperatures = (temperature, *MLKD_TEMPERATURES[1:])
    levels = {}
    if mlkd_level_weights is not None:
        if len(tuple(mlkd_level_weights)) != 3:
            raise ValueError(
                "mlkd_level_weights is (instance, class, batch), three "
                f"weights; got {mlkd_level_weights!r}."
            )
        levels = dict(zip(("instance_weight", "class_weight", "batch_weight"), mlkd_level_weights))
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.MLKD(
            temperatures=mlkd_temperatures,
            weight=logits_weight,
            warmup_epochs=warmup_epochs,
            logit_standardization=logit_standardization,
            level_scaling=mlkd_level_scaling,
            views=views,
            **levels,
        ),
    ]


# The reference's feature weights (mdistiller's CIFAR-100 settings). Left to
# their defaults, they make a small student worse than training it alone on a
# short 10-class run (docs/benchmarks/defaults.md), so a caller who does not
# set them gets them with a warning that names the settings that help.
FITNET_HINT_WEIGHT = 100.0
AT_FEATURE_WEIGHT = 1000.0


def _reference_weight(value, method, name, reference, fix):
    """`value`, or `reference` with a `UserWarning` naming `fix` when `value` is None."""
    if value is not None:
        return value
    warnings.warn(
        f"{method}'s default {name}={reference:g} (mdistiller's CIFAR-100 setting) trained "
        f"a student worse than no teacher on a short 10-class benchmark; {fix}, or pass "
        f"{name}={reference:g} to keep the reference's weight and silence this warning. "
        "Measurements: docs/benchmarks/defaults.md.",
        UserWarning,
        stacklevel=4,
    )
    return reference


def fitnet_terms(
    *,
    teacher_feature="auto",
    student_feature="auto",
    hint_weight=None,
    ce_weight=1.0,
    views=1,
):
    """FitNet's hint on one stage (mdistiller: hint weight 100, the middle stage).

    `"auto"` taps (`keras_unikd.auto_taps`) hint each network's middle stage.

    `hint_weight=None` means the reference's 100, with a warning: on a short
    10-class run it takes the student below training alone (and at 0.1 to 10
    it does not beat it); `"fitnet+kd"` with `hint_weight=1` helps there.
    """
    hint_weight = _reference_weight(
        hint_weight,
        "FitNet",
        "hint_weight",
        FITNET_HINT_WEIGHT,
        "use method 'fitnet+kd' with hint_weight=1",
    )
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.FitNetHint(teacher_feature, student_feature, weight=hint_weight, views=views),
    ]


def at_terms(
    *,
    teacher_features="auto",
    student_features="auto",
    p=2.0,
    feature_weight=None,
    ce_weight=1.0,
    views=1,
):
    """Attention transfer (mdistiller: p = 2, weight 1000, the stages after the stem).

    `"auto"` taps pair the stage ends of both networks, deepest first.

    `feature_weight=None` means the reference's 1000, with a warning: on a
    short 10-class run it takes the student below training alone, and at 10
    it adds little; `"at+kd"` with `feature_weight=10` helps there.
    """
    feature_weight = _reference_weight(
        feature_weight,
        "AT",
        "feature_weight",
        AT_FEATURE_WEIGHT,
        "use method 'at+kd' with feature_weight=10",
    )
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.AttentionTransfer(
            teacher_features, student_features, p=p, weight=feature_weight, views=views
        ),
    ]


def sp_terms(
    *, teacher_feature="auto", student_feature="auto", feature_weight=3000.0, ce_weight=1.0, views=1
):
    """Similarity-preserving KD (mdistiller: weight 3000, the last stage's map;
    `"auto"` taps read each network's last stage end)."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.SimilarityPreserving(
            teacher_feature, student_feature, weight=feature_weight, views=views
        ),
    ]


def pkt_terms(
    *,
    teacher_feature="auto",
    student_feature="auto",
    feature_weight=30000.0,
    pkt_eps=1e-7,
    ce_weight=1.0,
    views=1,
):
    """Probabilistic knowledge transfer (mdistiller: weight 30000, eps 1e-7, the
    pooled features; `"auto"` taps read each network's pooled vector)."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.ProbabilisticTransfer(
            teacher_feature, student_feature, weight=feature_weight, eps=pkt_eps, views=views
        ),
    ]


def rkd_terms(
    *,
    teacher_feature="auto",
    student_feature="auto",
    feature_weight=1.0,
    rkd_distance_weight=25.0,
    rkd_angle_weight=50.0,
    ce_weight=1.0,
    views=1,
):
    """Relational KD (mdistiller: distance 25, angle 50, the pooled features;
    `"auto"` taps read each network's pooled vector)."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.RelationalKD(
            teacher_feature,
            student_feature,
            distance_weight=rkd_distance_weight,
            angle_weight=rkd_angle_weight,
            weight=feature_weight,
            views=views,
        ),
    ]


def nst_terms(
    *, teacher_features="auto", student_features="auto", feature_weight=50.0, ce_weight=1.0, views=1
):
    """Neuron selectivity transfer (mdistiller: weight 50, the stages after the
    stem; `"auto"` taps pair the stage ends, deepest first)."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.NeuronSelectivityTransfer(
            teacher_features, student_features, weight=feature_weight, views=views
        ),
    ]


def kdsvd_terms(
    *,
    teacher_features="auto",
    student_features="auto",
    kdsvd_k=1,
    feature_weight=1.0,
    ce_weight=1.0,
    views=1,
):
    """KDSVD (mdistiller: k = 1, weight 1, the stages after the stem; `"auto"`
    taps pair the stage ends, deepest first)."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.KDSVD(teacher_features, student_features, k=kdsvd_k, weight=feature_weight, views=views),
    ]


def vid_terms(
    *,
    teacher_features="auto",
    student_features="auto",
    feature_weight=1.0,
    vid_eps=1e-5,
    vid_init_pred_var=5.0,
    ce_weight=1.0,
    views=1,
):
    """Variational information distillation (mdistiller: weight 1, eps 1e-5,
    initial variance 5, a regressor per stage after the stem; `"auto"` taps
    pair the stage ends, deepest first)."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.VariationalInformation(
            teacher_features,
            student_features,
            weight=feature_weight,
            eps=vid_eps,
            init_pred_var=vid_init_pred_var,
            views=views,
        ),
    ]


def ofd_terms(
    *,
    teacher_features="auto",
    student_features="auto",
    feature_weight=0.001,
    ce_weight=1.0,
    views=1,
):
    """Overhaul of feature distillation (mdistiller: weight 0.001, 1x1
    connectors, the pre-ReLU maps; `"auto"` taps read what each stage end's
    ReLU reads)."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.OverhaulFeatureDistillation(
            teacher_features, student_features, weight=feature_weight, views=views
        ),
    ]


def crd_terms(
    *,
    teacher_feature="auto",
    student_feature="auto",
    train_labels=None,
    crd_embedding_dim=128,
    crd_negatives=16384,
    crd_momentum=0.5,
    crd_temperature=0.07,
    feature_weight=0.8,
    seed=None,
    ce_weight=1.0,
    views=1,
):
    """Contrastive representation distillation (mdistiller: embedding 128,
    16384 negatives from other classes, momentum 0.5, NCE temperature 0.07,
    weight 0.8, the pooled features). Its memory banks need the training
    set's labels (`train_labels`, one per example index, which the presets'
    `build_terms`, the command line and the benchmarks give: see
    `reads_train_labels`) and batches that carry each example's index
    (`keras_unikd.data.with_example_index`)."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.ContrastiveRepresentation(
            teacher_feature,
            student_feature,
            labels=train_labels,
            embedding_dim=crd_embedding_dim,
            num_negatives=crd_negatives,
            momentum=crd_momentum,
            temperature=crd_temperature,
            seed=seed,
            weight=feature_weight,
            views=views,
        ),
    ]


def reviewkd_terms(
    *,
    teacher_features="auto",
    student_features="auto",
    feature_weight=1.0,
    warmup_epochs=20,
    max_mid_channels=512,
    ce_weight=1.0,
    views=1,
):
    """ReviewKD (mdistiller: weight 1, 20 warm-up epochs, mid width at most
    512; its ResNet32x4 -> ResNet8x4 config weighs 5, which that preset
    gives). `"auto"` taps: each network's stage ends and pooled vector."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.ReviewKD(
            teacher_features,
            student_features,
            weight=feature_weight,
            warmup_epochs=warmup_epochs,
            max_mid_channels=max_mid_channels,
            views=views,
        ),
    ]


def dist_terms(*, ce_weight=1.0, logits_weight=1.0, beta=1.0, gamma=1.0, temperature=1.0, views=1):
    """DIST (the authors' code, hunto/image_classification_sota: beta = gamma = 1, tau = 1)."""
    return [
        t.CrossEntropy(weight=ce_weight, views=views),
        t.DIST(beta=beta, gamma=gamma, temperature=temperature, weight=logits_weight, views=views),
    ]


# The logits methods UniKD's feature terms can sit on (`logits_loss`).
LOGITS_METHODS = types.MappingProxyType({"dkd": dkd_terms, "kd": kd_terms, "mlkd": mlkd_terms})


def unikd_terms(
    *,
    teacher_features,
    student_features,
    logits_loss="dkd",
    distribution_loss="sampled",
    feature_weight=1.0,
    consistency_weight=1.0,
    distribution_temperature=1.0,
    fuse_teacher_features=None,
    fuse_student_features=None,
    aggregator_mid_channels=None,
    log_var_range=None,
    seed=None,
    ce_weight=1.0,
    logits_weight=1.0,
    views=None,
    **logits_settings,
):
    """UniKD: a logits method (`logits_loss`, DKD by default) plus AFF + FDP.

    The logits method's own settings (`temperature`, `dkd_beta`, ...) pass
    through `**logits_settings`; `logit_standardization` applies to the
    logits term and to the distribution terms. The reference's UniKD weighs
    the cross-entropy and the logits term 1 (`ce_weight`, `logits_weight`);
    `views` defaults to the logits method's (2 for MLKD); `log_var_range`
    to `UniKDFeatures`'s.
    """
    check_choice("logits_loss", logits_loss, (*LOGITS_METHODS, None))
    if logits_loss is not None:
        allowed = set(inspect.signature(LOGITS_METHODS[logits_loss]).parameters)
        extra = sorted(set(logits_settings) - allowed)
        if extra:
            raise ValueError(
                f"{extra} are not settings of logits_loss={logits_loss!r} (its settings: "
                f"{sorted(allowed)}). Drop them or choose the logits loss they belong to."
            )
    if views is None:
        views = 2 if logits_loss == "mlkd" else 1
    if logits_loss is None:
        extra = sorted(set(logits_settings) - {"logit_standardization"})
        if extra:
            raise ValueError(
                f"{extra} set a logits loss, but logits_loss=None. Choose a logits_loss "
                "or drop them."
            )
        terms = student_terms(ce_weight=ce_weight, views=views)
    else:
        terms = LOGITS_METHODS[logits_loss](
            ce_weight=ce_weight, logits_weight=logits_weight, views=views, **logits_settings
        )
    ranges = {} if log_var_range is None else {"log_var_range": log_var_range}
    terms.append(
        t.UniKDFeatures(
            teacher_features,
            student_features,
            distribution_loss=distribution_loss,
            feature_weight=feature_weight,
            consistency_weight=consistency_weight,
            temperature=distribution_temperature,
            fuse_teacher_features=fuse_teacher_features,
            fuse_student_features=fuse_student_features,
            aggregator_mid_channels=aggregator_mid_channels,
            seed=seed,
            logit_standardization=logits_settings.get("logit_standardization", False),
            views=views,
            **ranges,
        )
    )
    return terms


# ----------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Method:
    """A distillation method: settings -> terms, and its views.

    Attributes:
        name: The method's name (`--method` on the command line).
        build: A function from keyword settings to a list of terms; its
            keyword defaults are the method's reference settings.
        views: 1, or 2 for batches of two views per example, `((weak,
            strong), labels)`.
        summary: One line: what it distils.
        reference: The paper and the code its terms follow.
        defaults: Settings that differ from `build`'s own defaults for this
            entry (UniMLKD is UniKD's builder with MLKD's logits).
        teacher: Whether it reads the teacher (`False` for the student
            alone).
    """

    name: str
    build: typing.Callable
    views: int
    summary: str
    reference: str
    defaults: typing.Mapping = dataclasses.field(default_factory=dict)
    teacher: bool = True

    def terms(self, **settings):
        """The method's terms with `settings` over its defaults."""
        unknown = sorted(set(settings) - set(self.setting_names))
        if unknown:
            raise ValueError(
                f"Method {self.name!r} has no setting(s) {unknown}; its settings are "
                f"{sorted(self.setting_names)}."
            )
        return self.build(**{**self.defaults, **settings})

    def resolve(self, **settings):
        """Every setting the terms are built with: `settings` over the defaults.

        Example:

        >>> METHODS["dkd"].resolve(dkd_beta=2.0)["dkd_beta"], METHODS["dkd"].resolve()["dkd_beta"]
        (2.0, 8.0)
        """
        settings = {**self.defaults, **settings}
        builders = [self.build]
        if self.build is unikd_terms:
            logits = settings.get("logits_loss", "dkd")
            builders += [LOGITS_METHODS[logits]] if logits else []
        resolved = {}
        for builder in builders:
            for name, parameter in inspect.signature(builder).parameters.items():
                if parameter.kind is parameter.KEYWORD_ONLY:
                    resolved.setdefault(name, parameter.default)
        resolved.update(settings)
        return resolved

    @property
    def setting_names(self):
        """The settings `terms` accepts."""
        names = set(inspect.signature(self.build).parameters) - {"logits_settings"}
        if self.build is unikd_terms:
            for builder in LOGITS_METHODS.values():
                names |= set(inspect.signature(builder).parameters)
        return names


METHODS = types.MappingProxyType(
    {
        method.name: method
        for method in (
            Method(
                "unikd",
                unikd_terms,
                1,
                "UniKD: AFF + FDP feature distributions, on DKD",
                "Huang et al., ECCV 2024 (FabienCode/mdistiller, UniLogitsKD)",
            ),
            Method(
                "unimlkd",
                unikd_terms,
                2,
                "UniKD's feature terms on MLKD, two views: the authors' best recipe",
                "Huang et al., ECCV 2024 (FabienCode/mdistiller, UniMLKD)",
                defaults=types.MappingProxyType(
                    {"logits_loss": "mlkd", "distribution_temperature": 4.0}
                ),
            ),
            Method(
                "dkd",
                dkd_terms,
                1,
                "decoupled target / non-target KD",
                "Zhao et al., CVPR 2022 (megvii-research/mdistiller, DKD.py)",
            ),
            Method(
                "mlkd",
                mlkd_terms,
                2,
                "multi-level (instance, class, batch) logit distillation, two views",
                "Jin et al., CVPR 2023 (Jin-Ying/Multi-Level-Logit-Distillation)",
            ),
            Method(
                "kd",
                kd_terms,
                1,
                "Hinton's KD on temperature-softened logits",
                "Hinton et al., 2015 (megvii-research/mdistiller, KD.py)",
            ),
            Method(
                "dist",
                dist_terms,
                1,
                "Pearson correlations of the predictions, per example and per class",
                "Huang et al., NeurIPS 2022 (hunto/image_classification_sota, dist_kd.py)",
            ),
            Method(
                "fitnet",
                fitnet_terms,
                1,
                "point-wise hint on one intermediate feature map",
                "Romero et al., ICLR 2015 (megvii-research/mdistiller, FitNet.py)",
            ),
            Method(
                "at",
                at_terms,
                1,
                "attention maps (channel means of f^p) of several stages",
                "Zagoruyko & Komodakis, ICLR 2017 (megvii-research/mdistiller, AT.py)",
            ),
            Method(
                "sp",
                sp_terms,
                1,
                "the batch's example-similarity matrix of the last stage",
                "Tung & Mori, ICCV 2019 (megvii-research/mdistiller, SP.py)",
            ),
            Method(
                "pkt",
                pkt_terms,
                1,
                "the batch's cosine-similarity distributions of the pooled features",
                "Passalis & Tefas, ECCV 2018 (megvii-research/mdistiller, PKT.py)",
            ),
            Method(
                "rkd",
                rkd_terms,
                1,
                "distances and angles between the batch's pooled features",
                "Park et al., CVPR 2019 (megvii-research/mdistiller, RKD.py)",
            ),
            Method(
                "nst",
                nst_terms,
                1,
                "distributions of each channel's activations (polynomial-kernel MMD)",
                "Huang & Wang, 2017 (megvii-research/mdistiller, NST.py)",
            ),
            Method(
                "kdsvd",
                kdsvd_terms,
                1,
                "leading singular vectors of each stage, related between stages",
                "Lee et al., ECCV 2018 (megvii-research/mdistiller, KDSVD.py)",
            ),
            Method(
                "vid",
                vid_terms,
                1,
                "each stage's teacher map as a Gaussian predicted from the student's",
                "Ahn et al., CVPR 2019 (megvii-research/mdistiller, VID.py)",
            ),
            Method(
                "ofd",
                ofd_terms,
                1,
                "pre-ReLU maps through a connector, with margins from the teacher's BN",
                "Heo et al., ICCV 2019 (megvii-research/mdistiller, OFD.py)",
            ),
            Method(
                "crd",
                crd_terms,
                1,
                "contrastive embeddings of the pooled features, memory banks of the data",
                "Tian et al., ICLR 2020 (megvii-research/mdistiller, CRD.py)",
            ),
            Method(
                "reviewkd",
                reviewkd_terms,
                1,
                "student stages fused deepest first (ABF), matched stage by stage (HCL)",
                "Chen et al., CVPR 2021 (megvii-research/mdistiller, ReviewKD.py)",
            ),
            Method(
                "student",
                student_terms,
                1,
                "the student alone, with its cross-entropy",
                "",
                teacher=False,
            ),
        )
    }
)


# ----------------------------------------------------------------------
# Variants: term list -> term list
# ----------------------------------------------------------------------


def _replace(term, **changes):
    """A new, unbuilt term of the same class with `changes` to its config."""
    return type(term).from_config({**term.get_config(), **changes})


def with_logit_standardization(terms, temperature=2.0, weight=9.0):
    """Logit standardization (Sun et al., CVPR 2024) on every KL-based term.

    The reference's CIFAR-100 settings (sunshangquan/logit-standardization-KD:
    `--logit-stand --base-temp 2 --kd-weight 9`): KD, DKD and MLKD z-score
    their logits, take temperature 2 (MLKD: as its first, base temperature)
    and weight 9; UniKD's distribution terms z-score theirs; with KD the
    cross-entropy is weighted 0.1, as the reference's KD recipe has it.
    """
    has_kd = any(isinstance(term, t.KD) for term in terms)
    changed = []
    for term in terms:
        if isinstance(term, (t.KD, t.DKD)):
            term = _replace(
                term, logit_standardization=True, temperature=temperature, weight=weight
            )
        elif isinstance(term, t.MLKD):
            temperatures = [temperature, *term.temperatures[1:]]
            term = _replace(
                term, logit_standardization=True, temperatures=temperatures, weight=weight
            )
        elif isinstance(term, t.UniKDFeatures):
            term = _replace(term, logit_standardization=True)
        elif isinstance(term, t.CrossEntropy) and has_kd:
            term = _replace(term, weight=0.1)
        changed.append(term)
    return changed


def with_gaussian_distributions(terms):
    """UniKD's closed-form Gaussian KL instead of one sampled distribution."""
    return [
        _replace(term, distribution_loss="gaussian") if isinstance(term, t.UniKDFeatures) else term
        for term in terms
    ]


def with_deepest_student_map_only(terms):
    """FDP on the student's deepest map alone, no aggregation (UniKD's ablation).

    The deepest map is the tap before the last one (the pooled vector).
    """
    return [
        _replace(term, student_features=list(term.student_features[-2:-1]))
        if isinstance(term, t.UniKDFeatures)
        else term
        for term in terms
    ]


def without_logits_loss(terms):
    """AFF + FDP without any logits loss (UniKD's ablation)."""
    return [term for term in terms if not isinstance(term, (t.KD, t.DKD, t.MLKD))]


def with_kd(terms, temperature=4.0, weight=1.0):
    """The terms plus Hinton's KD after the cross-entropy: FitNet + KD (the
    "direct combination" the paper argues against), AT + KD."""
    kd = t.KD(temperature=temperature, weight=weight)
    ce = [term for term in terms if isinstance(term, t.CrossEntropy)]
    return [*ce, kd, *(term for term in terms if term not in ce)]


@dataclasses.dataclass(frozen=True)
class Variant:
    """A method changed by a function of its terms.

    Attributes:
        name: The variant's name (`"mlkd+ls"`).
        method: The method it changes (a key of `METHODS`).
        transform: Term list -> term list.
        summary: One line.
    """

    name: str
    method: str
    transform: typing.Callable
    summary: str

    def terms(self, **settings):
        """The variant's terms: its method's, with `settings`, transformed."""
        return self.transform(METHODS[self.method].terms(**settings))


VARIANTS = types.MappingProxyType(
    {
        variant.name: variant
        for variant in (
            Variant("fitnet+kd", "fitnet", with_kd, "FitNet's hint plus KD: the paper's foil"),
            Variant("at+kd", "at", with_kd, "attention transfer plus KD"),
            Variant(
                "unikd-gaussian",
                "unikd",
                with_gaussian_distributions,
                "UniKD with the closed-form Gaussian KL",
            ),
            Variant(
                "fdp-only",
                "unikd",
                with_deepest_student_map_only,
                "UniKD without AFF: FDP on the deepest student map",
            ),
            Variant(
                "aff+fdp-no-logits", "unikd", without_logits_loss, "UniKD without a logits loss"
            ),
            *(
                Variant(
                    f"{name}+ls",
                    name,
                    with_logit_standardization,
                    f"{name} with logit standardization",
                )
                for name in ("kd", "dkd", "mlkd", "unikd", "unimlkd")
            ),
        )
    }
)

# The methods that train on two views of each example.
TWO_VIEW_METHODS = tuple(name for name, method in METHODS.items() if method.views == 2)


def get_method(name):
    """The `Method` or `Variant` called `name`.

    Raises:
        ValueError: for an unknown name; the message lists them.
    """
    if name in METHODS:
        return METHODS[name]
    if name in VARIANTS:
        return VARIANTS[name]
    raise ValueError(
        f"Unknown method {name!r}; expected one of {', '.join(METHODS)} or a variant: "
        f"{', '.join(VARIANTS)}."
    )


def method_terms(name, **settings):
    """The terms of method or variant `name` with `settings` over its defaults.

    Example:

    >>> [term.name for term in method_terms("aff+fdp-no-logits",
    ...                                     teacher_features="t", student_features="s")]
    ['ce', 'unikd']
    """
    return get_method(name).terms(**settings)


def with_seed(name, settings, seed):
    """`settings` with UniKD's noise seed, when method `name` has one (and a seed is given).

    Example:

    >>> with_seed("unikd", {"dkd_beta": 2.0}, 7), with_seed("kd", {}, 7)
    ({'dkd_beta': 2.0, 'seed': 7}, {})
    """
    settings = dict(settings)
    if seed is not None and "seed" in get_method(method_base(name)).setting_names:
        settings["seed"] = seed
    return settings


def reads_train_labels(name):
    """Whether method (or variant) `name` needs the training set's labels
    (`train_labels`) and batches that carry each example's index (CRD).

    Example:

    >>> reads_train_labels("crd"), reads_train_labels("kd")
    (True, False)
    """
    return "train_labels" in get_method(method_base(name)).setting_names


def method_base(name):
    """The method of `name`: itself, or the method a variant changes."""
    return getattr(get_method(name), "method", name)


def method_views(name):
    """1, or 2 for a method (or variant) whose batches hold two views per example."""
    return METHODS[method_base(name)].views
