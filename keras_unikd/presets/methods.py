"""The distillation methods, by name: the one table of them.

`METHODS` are the paper's methods; every preset builds each of them
(`build_distiller`), and the command line offers them. `VARIANTS` are the
paper's foil and UniKD's ablations, which the benchmarks run beside them:
each changes the distiller arguments of one of `METHODS`
(`variant_kwargs`). The Fashion-MNIST experiment, the examples and the
benchmarks take their method names from here.
"""

import types

METHODS = ("unikd", "unimlkd", "dkd", "mlkd", "kd", "fitnet", "student")

# The methods that train on two views of each example, ((weak, strong),
# labels) batches: MLKD and the authors' UniMLKD.
TWO_VIEW_METHODS = ("unimlkd", "mlkd")

# Logit standardization (Sun et al., CVPR 2024) with the reference's CIFAR-100
# settings (sunshangquan/logit-standardization-KD, README and tools/train.py:
# --logit-stand --base-temp 2 --kd-weight 9): temperature 2 and the logits
# loss weighted by 9; KD's cross-entropy weight stays 0.1. UniKD and UniMLKD
# take their logits loss's settings and standardize their distribution terms.
_LOGIT_STANDARDIZATION = {"logit_standardization": True, "temperature": 2.0, "logits_weight": 9.0}

# Variant name -> (the method it changes, the arguments it overrides).
VARIANTS = types.MappingProxyType(
    {
        # FitNet's hint plus KD: the "direct combination" of feature and
        # logits distillation that the paper argues against.
        "fitnet+kd": ("fitnet", {"logits_loss": "kd", "warmup_epochs": 0}),
        # The closed-form Gaussian KL instead of one sampled distribution.
        "unikd-gaussian": ("unikd", {"distribution_loss": "gaussian"}),
        # FDP on the student's deepest map alone, no aggregation (the
        # override depends on the taps; see `variant_kwargs`).
        "fdp-only": ("unikd", {}),
        # AFF + FDP without any logits loss.
        "aff+fdp-no-logits": ("unikd", {"logits_loss": None}),
        # Each KL-based method with logit standardization.
        "kd+ls": ("kd", dict(_LOGIT_STANDARDIZATION, ce_weight=0.1)),
        "dkd+ls": ("dkd", _LOGIT_STANDARDIZATION),
        "mlkd+ls": ("mlkd", _LOGIT_STANDARDIZATION),
        "unikd+ls": ("unikd", _LOGIT_STANDARDIZATION),
        "unimlkd+ls": ("unimlkd", _LOGIT_STANDARDIZATION),
    }
)


def variant_kwargs(variant, method_kwargs):
    """The distiller arguments of a variant, from those of its method.

    Args:
        variant: A key of `VARIANTS`.
        method_kwargs: The arguments of the method it changes
            (`VARIANTS[variant][0]`), e.g. from `distiller_kwargs`.

    Returns:
        A new dict: `method_kwargs` with the variant's overrides. For
        `"fdp-only"`, `student_features` keeps only the deepest map: the
        tap before the last one, which is the pooled vector. Where the
        method gives MLKD's temperature list (`mlkd_temperatures`), a
        variant's `temperature` replaces its first, the base temperature,
        as the logit-standardization reference's `--base-temp` does.

    Raises:
        ValueError: for an unknown variant.

    Example:

    >>> unikd = {"student_features": ["stage1", "stage2", "stage3", "pool"]}
    >>> variant_kwargs("fdp-only", unikd)
    {'student_features': ['stage3']}
    >>> variant_kwargs("aff+fdp-no-logits", unikd)["logits_loss"] is None
    True
    >>> mlkd = {"temperature": 4.0, "mlkd_temperatures": (4.0, 3.0, 5.0, 2.0, 6.0)}
    >>> variant_kwargs("mlkd+ls", mlkd)["mlkd_temperatures"]
    (2.0, 3.0, 5.0, 2.0, 6.0)
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"Unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}."
        )
    overrides = VARIANTS[variant][1]
    kwargs = dict(method_kwargs, **overrides)
    if "temperature" in overrides and kwargs.get("mlkd_temperatures") is not None:
        kwargs["mlkd_temperatures"] = (
            overrides["temperature"],
            *tuple(kwargs["mlkd_temperatures"])[1:],
        )
    if variant == "fdp-only":
        kwargs["student_features"] = list(kwargs["student_features"][-2:-1])
    return kwargs
