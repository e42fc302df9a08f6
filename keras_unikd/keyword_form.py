"""The Distiller's keyword form: its options as a list of terms.

`Distiller(teacher, student, teacher_features=..., logits_loss=..., ...)`
builds `[CrossEntropy, DKD, KD or MLKD, UniKDFeatures]` here; with the same
weights it gives the same losses as the equivalent `terms=[...]`.
"""

import inspect

from keras_unikd import losses
from keras_unikd.terms import DKD
from keras_unikd.terms import KD
from keras_unikd.terms import MLKD
from keras_unikd.terms import CrossEntropy
from keras_unikd.terms import UniKDFeatures
from keras_unikd.terms.base import AUTO_FEATURES
from keras_unikd.terms.base import as_layer_paths
from keras_unikd.terms.base import paths_config
from keras_unikd.terms.logits import MLKD_TEMPERATURES
from keras_unikd.validation import check_choice

LOGITS_LOSSES = ("dkd", "kd", "mlkd")


def logits_term(
    logits_loss,
    weight,
    temperature,
    dkd_alpha,
    dkd_beta,
    warmup_epochs,
    logit_standardization=False,
    mlkd_temperatures=None,
    views=1,
    mlkd_level_weights=None,
):
    """The `"dkd"`, `"kd"` or `"mlkd"` term, or `None` for `logits_loss=None`.

    MLKD's temperatures are `mlkd_temperatures`, by default `temperature`
    followed by MLKD's others, `(temperature, 3, 5, 2, 6)` (the
    logit-standardization reference's `--base-temp` replaces the first);
    `mlkd_level_weights` is `(instance, class, batch)`, the weights of its
    three levels (default all 1).
    """
    check_choice("logits_loss", logits_loss, LOGITS_LOSSES + (None,))
    for name, value in (
        ("mlkd_temperatures", mlkd_temperatures),
        ("mlkd_level_weights", mlkd_level_weights),
    ):
        if value is not None and logits_loss != "mlkd":
            raise ValueError(
                f"{name} is an MLKD option, but logits_loss={logits_loss!r}. "
                f"Set logits_loss='mlkd' or drop {name}."
            )
    common = dict(
        weight=weight,
        warmup_epochs=warmup_epochs,
        logit_standardization=logit_standardization,
        views=views,
    )
    if logits_loss == "dkd":
        return DKD(alpha=dkd_alpha, beta=dkd_beta, temperature=temperature, **common)
    if logits_loss == "kd":
        return KD(temperature=temperature, **common)
    if logits_loss == "mlkd":
        if mlkd_temperatures is None:
            mlkd_temperatures = (temperature, *MLKD_TEMPERATURES[1:])
        levels = {}
        if mlkd_level_weights is not None:
            if len(tuple(mlkd_level_weights)) != 3:
                raise ValueError(
                    "mlkd_level_weights is (instance, class, batch), three "
                    f"weights; got {mlkd_level_weights!r}."
                )
            levels = dict(
                zip(("instance_weight", "class_weight", "batch_weight"), mlkd_level_weights)
            )
        return MLKD(temperatures=mlkd_temperatures, **levels, **common)
    return None


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
    (the default) warms the logits term up over 1/12 of the planned run,
    the paper's 20 of 240 epochs; an int gives the epochs.

    Returns:
        `[CrossEntropy(ce_weight), <logits term>, UniKDFeatures(...)]`,
        without the logits term for `logits_loss=None` and without the
        feature term for `distribution_loss=None`.

    Raises:
        ValueError: for unknown choices, features given with
            `distribution_loss=None`, a distribution loss without features,
            or nothing to distil.
    """
    check_choice("distribution_loss", distribution_loss, losses.DISTRIBUTION_FORMS + (None,))
    teacher_features = as_layer_paths(teacher_features, "teacher_features", allow_auto=True)
    student_features = as_layer_paths(student_features, "student_features", allow_auto=True)
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
    if views is None:
        views = 2 if logits_loss == "mlkd" else 1
    terms = [CrossEntropy(weight=ce_weight, views=views)]
    logits = logits_term(
        logits_loss,
        logits_weight,
        temperature,
        dkd_alpha,
        dkd_beta,
        warmup_epochs,
        logit_standardization=logit_standardization,
        mlkd_temperatures=mlkd_temperatures,
        views=views,
        mlkd_level_weights=mlkd_level_weights,
    )
    if logits is not None:
        terms.append(logits)
    if distribution_loss is not None:
        terms.append(
            UniKDFeatures(
                teacher_features,
                student_features,
                distribution_loss=distribution_loss,
                feature_weight=feature_weight,
                consistency_weight=consistency_weight,
                temperature=distribution_temperature,
                fuse_teacher_features=fuse_teacher_features,
                fuse_student_features=fuse_student_features,
                aggregator_mid_channels=aggregator_mid_channels,
                log_var_range=log_var_range,
                seed=seed,
                logit_standardization=logit_standardization,
                views=views,
            )
        )
    return terms


KEYWORD_OPTIONS = tuple(inspect.signature(terms_from_keywords).parameters)
