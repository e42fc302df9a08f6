"""Deprecated: the method table is `keras_unikd.methods`.

This module re-exports `METHODS`, `TWO_VIEW_METHODS` and `VARIANTS` from
there, with a `DeprecationWarning` on import. They are the table's mappings
now (`METHODS[name]` is a `keras_unikd.methods.Method`, `VARIANTS[name]` a
`Variant`); `variant_kwargs` is gone: a variant transforms its method's
terms (`keras_unikd.methods.method_terms("mlkd+ls", ...)`,
`keras_unikd.presets.build_terms(preset, "mlkd+ls")`).
"""

import warnings

from keras_unikd.methods import METHODS
from keras_unikd.methods import TWO_VIEW_METHODS
from keras_unikd.methods import VARIANTS

__all__ = ["METHODS", "TWO_VIEW_METHODS", "VARIANTS"]

warnings.warn(
    "keras_unikd.presets.methods is deprecated: the method table is keras_unikd.methods "
    "(presets.build_terms(preset, method) builds a preset's terms).",
    DeprecationWarning,
    stacklevel=2,
)
