"""Distillation terms: Keras layers that a `keras_unikd.Distiller` sums.

`DistillationTerm` is the interface; the built-in terms are `CrossEntropy`,
`KD`, `DKD`, `MLKD`, `UniKDFeatures`, `FitNetHint`, `AttentionTransfer` and
the relational `SimilarityPreserving`, `ProbabilisticTransfer` and
`RelationalKD`, `ReviewKD`, and `DIST`. Each name is imported on first
use.
"""

from keras_unikd.lazy import lazy_attributes

_NAMES = {
    **dict.fromkeys(
        ("DistillationTerm", "ForwardRecord", "ForwardShapes", "TeacherNeeds"),
        "keras_unikd.terms.base",
    ),
    **dict.fromkeys(("CrossEntropy", "KD", "DKD", "MLKD"), "keras_unikd.terms.logits"),
    "UniKDFeatures": "keras_unikd.terms.unikd",
    "FitNetHint": "keras_unikd.terms.fitnet",
    "AttentionTransfer": "keras_unikd.terms.attention",
    "DIST": "keras_unikd.terms.dist",
    "ReviewKD": "keras_unikd.terms.reviewkd",
    **dict.fromkeys(
        ("SimilarityPreserving", "ProbabilisticTransfer", "RelationalKD"),
        "keras_unikd.terms.relational",
    ),
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)
