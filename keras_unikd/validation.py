"""Argument checks: each raises a `ValueError` that names the argument and the fix.

Every check takes the argument's name first, then its value. With `fn`, the
name of the function whose argument it is, the message reads
``fn: `name` must be ...``; without it, ``name must be ...`` (a term's
checks pass names such as `"DKD temperature"`).

Example:

>>> check_positive_int("epochs", 3, fn="build_teacher_cache")
3
>>> check_positive_int("epochs", 0, fn="build_teacher_cache")
Traceback (most recent call last):
...
ValueError: build_teacher_cache: `epochs` must be a positive integer; got 0.
>>> check_positive("KD temperature", "4")
Traceback (most recent call last):
...
ValueError: KD temperature must be a number > 0; got '4' (a str).
"""

import math
import numbers

import numpy as np


def _label(name, fn):
    return f"{fn}: `{name}`" if fn else name


def is_int(value):
    """Whether `value` is a Python or NumPy integer (not a bool)."""
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool)


def check_bool(name, value, *, fn=None):
    """Returns `value` if it is `True` or `False`, else raises a `ValueError`."""
    if not isinstance(value, bool):
        raise ValueError(f"{_label(name, fn)} must be True or False; got {value!r}.")
    return value


def check_choice(name, value, choices, *, fn=None):
    """Returns `value` if it is one of `choices`, else raises a `ValueError`."""
    if value not in choices:
        where = f"{fn}: " if fn else ""
        raise ValueError(
            f"{where}Unknown {name}={value!r}; expected one of "
            f"{', '.join(repr(choice) for choice in choices)}."
        )
    return value


def check_int(name, value, *, low=0, high=None, fn=None, hint="", allow_none=False):
    """Returns `value` as an `int` if it is an integer in `[low, high)`.

    Args:
        name: The argument's name.
        value: Its value.
        low: The smallest value allowed.
        high: The first value not allowed above, or `None`.
        fn: The function whose argument it is, or `None`.
        hint: Text appended to the message (starting with a space).
        allow_none: Whether `None` is accepted (and returned).

    Raises:
        ValueError: for anything else.
    """
    if allow_none and value is None:
        return None
    if is_int(value) and value >= low and (high is None or value < high):
        return int(value)
    upper = f" and below {high}" if high is not None else ""
    none = "None or " if allow_none else ""
    raise ValueError(
        f"{_label(name, fn)} must be {none}an integer >= {low}{upper}; got {value!r}.{hint}"
    )


def check_positive_int(name, value, *, fn=None, allow_none=False):
    """Returns `value` if it is an integer >= 1 (or `None` with `allow_none`)."""
    if allow_none and value is None:
        return None
    if not is_int(value) or value < 1:
        raise ValueError(
            f"{_label(name, fn)} must be a positive integer"
            f"{' or None' if allow_none else ''}; got {value!r}."
        )
    return int(value)


def _check_number(name, value, fn, kind):
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(
            f"{_label(name, fn)} must be a {kind}; got {value!r} (a {type(value).__name__})."
        )


def check_non_negative(name, value, *, fn=None):
    """Returns `value` if it is a finite number >= 0 (a weight, say).

    Raises:
        ValueError: for a negative, infinite or NaN number (a negative
            weight would maximise its loss) and for anything not a number.
    """
    _check_number(name, value, fn, "finite number >= 0")
    if not math.isfinite(value) or value < 0:
        hint = ""
        if "weight" in name:
            hint = " A negative weight would maximise that loss; use 0 to switch a term off."
        raise ValueError(f"{_label(name, fn)} must be a finite number >= 0; got {value!r}.{hint}")
    return value


def check_positive(name, value, *, fn=None):
    """Returns `value` if it is a finite number > 0 (a temperature, say).

    Raises:
        ValueError: for anything not a number (`"4"`), and for a number that
            is not finite or not > 0.
    """
    _check_number(name, value, fn, "number > 0")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{_label(name, fn)} must be a finite number > 0; got {value!r}.")
    if value == 0:
        hint = " (softmax(z / T) is undefined at T = 0)" if "temperature" in name else ""
        raise ValueError(f"{_label(name, fn)} must be > 0; got {value!r}{hint}.")
    return value


def check_per_channel(name, value, channels, *, fn=None):
    """`value`, one number or one per channel, as a list of `channels` floats.

    Raises:
        ValueError: when `value` has neither 1 nor `channels` numbers.
    """
    array = np.asarray(value, "float64").reshape(-1)
    if array.size not in (1, channels):
        raise ValueError(
            f"{_label(name, fn)} must be a scalar or have one value per channel "
            f"({channels}); got {value!r}."
        )
    return [float(v) for v in np.broadcast_to(array, (channels,))]


def check_normalization(mean, std, *, fn=None):
    """Checks the `mean` and `std` of a per-channel normalisation.

    Raises:
        ValueError: when only one of them is given, or a `std` is not > 0.
    """
    where = f"{fn}: " if fn else ""
    if (mean is None) != (std is None):
        raise ValueError(
            f"{where}pass both `mean` and `std` (e.g. from `channel_stats(x_train)`) or "
            "neither (images are then only divided by 255)."
        )
    if std is not None and np.any(np.asarray(std, "float64") <= 0):
        raise ValueError(
            f"{where}`std` must be positive; got {std!r}. A zero std usually means a "
            "constant channel: use std=1 there."
        )


# The Distiller's model and data checks lived here; they are
# keras_unikd.distiller_checks now. The old names still resolve, and warn.
_MOVED = (
    "check_input_scale",
    "check_integral_labels",
    "check_no_shared_weights",
    "check_not_empty",
    "first_batch",
    "load_model_argument",
)


def __getattr__(name):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    from keras_unikd import distiller_checks

    warnings.warn(
        f"keras_unikd.validation.{name} moved to keras_unikd.distiller_checks.{name}.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(distiller_checks, name)
