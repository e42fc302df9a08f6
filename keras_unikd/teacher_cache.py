"""Deprecated: the teacher-output cache is the package `keras_unikd.cache`.

This module re-exports its names (and `split_cached_batch`, now
`keras_unikd.teacher_source.carried_outputs`) for code written against it,
with a `DeprecationWarning` on import. Caches of its format version 1 are
not read by `keras_unikd.cache` (version 2 records the teacher's feature
shapes): build them again.
"""

import warnings

from keras_unikd.cache import CACHED_TEACHER
from keras_unikd.cache import DTYPES
from keras_unikd.cache import INPUTS
from keras_unikd.cache import TeacherCache
from keras_unikd.cache import build_teacher_cache
from keras_unikd.cache import cached_teacher_pipeline
from keras_unikd.cache import dataset_fingerprint
from keras_unikd.cache import open_teacher_cache
from keras_unikd.cache import teacher_fingerprint
from keras_unikd.teacher_source import carried_outputs as split_cached_batch

warnings.warn(
    "keras_unikd.teacher_cache is deprecated: import from keras_unikd.cache "
    "(split_cached_batch is keras_unikd.teacher_source.carried_outputs).",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "CACHED_TEACHER",
    "DTYPES",
    "INPUTS",
    "TeacherCache",
    "build_teacher_cache",
    "cached_teacher_pipeline",
    "dataset_fingerprint",
    "open_teacher_cache",
    "split_cached_batch",
    "teacher_fingerprint",
]
