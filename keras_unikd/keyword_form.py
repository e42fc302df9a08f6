"""The Distiller's keyword form: its options, as a method of the method table.

`Distiller(teacher, student, teacher_features=..., logits_loss=..., ...)`
builds its terms here: `logits_loss` alone (`distribution_loss=None`) is
that method of `keras_unikd.methods.METHODS` (`"kd"`, `"dkd"`, `"mlkd"`), and
with a `distribution_loss` it is `"unikd"` on that logits loss. The options
keep the keyword form's own defaults (UniKD on DKD with the paper's
ResNet32x4 -> ResNet8x4 settings, every weight 1); with the same settings
it gives the same losses as the equivalent `terms=[...]`.
"""

import inspect

from keras_unikd import losses
from keras_unikd import methods
from keras_unikd.terms.base import AUTO_FEATURES
from keras_unikd.terms.base import as_layer_paths
from keras_unikd.terms.base import paths_config
from keras_unikd.validation import check_choice

LOGITS_LOSSES = tuple(methods.LOGITS_METHODS)


def terms_from_keywords(
    teacher_features=AUTO_FEATURES,
    student_features=AUTO_FEATURES,
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
    warmup_epochs="auto",
    fuse_teacher_features=None,
    fuse_student_features=None,
    aggregator_mid_channels=None,
    log_var_range=losses.DEFAULT_LOG_VAR_RANGE,
    seed=None,
    logit_standardization=False,
    mlkd_temperatures=None,
    mlkd_level_weights=None,
    mlkd_level_scaling="balanced",
    views=None,
):
    """The terms of the keyword form (see `keras_unikd.Distiller`).

    `views` is the number of views per example of the training batches:
    `None` means 2 (`((weak, strong), labels)` batches) for
    `logits_loss="mlkd"`, as MLKD trains, and 1 otherwise. With two views
    every term runs on both. `logit_standardization` applies to the logits
    term and to the UniKD distribution terms. Features `"auto"` (the
    default) let the Distiller choose the layers (`keras_unikd.auto_taps`);
    without a distribution loss they tap nothing. `warmup_epochs="auto"`
    (the default) warms the logits term up over a quarter of the planned
    run, at most the paper's 20 epochs (`terms.base.auto_warmup_epochs`); a
    number gives the epochs.

    Returns:
        `[CrossEntropy(ce_weight), <logits term>, UniKDFeatures(...)]`,
        without the logits term for `logits_loss=None` and without the
        feature term for `distribution_loss=None`.

    Raises:
        ValueError: for unknown choices, features given with
            `distribution_loss=None`, a distribution loss without features,
            MLKD options with another logits loss, or nothing to distil.
    """
    check_choice("logits_loss", logits_loss, LOGITS_LOSSES + (None,))
    check_choice("distribution_loss", distribution_loss, losses.DISTRIBUTION_FORMS + (None,))
    for name, value, default in (
        ("mlkd_temperatures", mlkd_temperatures, None),
        ("mlkd_level_weights", mlkd_level_weights, None),
        ("mlkd_level_scaling", mlkd_level_scaling, "balanced"),
    ):
        if value != default and logits_loss != "mlkd":
            raise ValueError(
                f"{name} is an MLKD option, but logits_loss={logits_loss!r}. "
                f"Set logits_loss='mlkd' or drop {name}."
            )
    teacher_features = as_layer_paths(teacher_features, "teacher_features", allow_auto=True)
    student_features = as_layer_paths(student_features, "student_features", allow_auto=True)
    _check_features(distribution_loss, logits_loss, teacher_features, student_features)
    if views is None:
        views = 2 if logits_loss == "mlkd" else 1
    logits = {}
    if logits_loss is not None:
        every = dict(
            logits_weight=logits_weight,
            temperature=temperature,
            dkd_alpha=dkd_alpha,
            dkd_beta=dkd_beta,
            warmup_epochs=warmup_epochs,
            logit_standardization=logit_standardization,
            mlkd_temperatures=mlkd_temperatures,
            mlkd_level_weights=mlkd_level_weights,
            mlkd_level_scaling=mlkd_level_scaling,
        )
        accepted = inspect.signature(methods.LOGITS_METHODS[logits_loss]).parameters
        logits = {name: value for name, value in every.items() if name in accepted}
    if distribution_loss is None:
        return methods.method_terms(logits_loss, ce_weight=ce_weight, views=views, **logits)
    if logits_loss is None:
        logits = {"logit_standardization": logit_standardization}
    return methods.method_terms(
        "unikd",
        teacher_features=teacher_features,
        student_features=student_features,
        logits_loss=logits_loss,
        distribution_loss=distribution_loss,
        feature_weight=feature_weight,
        consistency_weight=consistency_weight,
        distribution_temperature=distribution_temperature,
        fuse_teacher_features=fuse_teacher_features,
        fuse_student_features=fuse_student_features,
        aggregator_mid_channels=aggregator_mid_channels,
        log_var_range=log_var_range,
        seed=seed,
        ce_weight=ce_weight,
        views=views,
        **logits,
    )


def _check_features(distribution_loss, logits_loss, teacher_features, student_features):
    if distribution_loss is None:
        if any(paths != AUTO_FEATURES and paths for paths in (teacher_features, student_features)):
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
            "teacher feature and one student feature (layer names, or "
            f"'auto'); got teacher_features={paths_config(teacher_features)!r}, "
            f"student_features={paths_config(student_features)!r}."
        )


KEYWORD_OPTIONS = tuple(inspect.signature(terms_from_keywords).parameters)
