"""Distillation terms: Keras layers that a `keras_unikd.Distiller` sums.

`DistillationTerm` is the interface. The built-in terms: `CrossEntropy`;
the logit terms `KD`, `DKD`, `MLKD` and `DIST`; UniKD's `UniKDFeatures`;
the feature baselines `FitNetHint`, `AttentionTransfer`,
`NeuronSelectivityTransfer`, `KDSVD`, `VariationalInformation`,
`OverhaulFeatureDistillation` and `ReviewKD`; the relational
`SimilarityPreserving`, `ProbabilisticTransfer`, `RelationalKD` and the
contrastive `ContrastiveRepresentation`. Each name is imported on first use.
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
    "NeuronSelectivityTransfer": "keras_unikd.terms.nst",
    "KDSVD": "keras_unikd.terms.kdsvd",
    "VariationalInformation": "keras_unikd.terms.vid",
    "OverhaulFeatureDistillation": "keras_unikd.terms.ofd",
    "ContrastiveRepresentation": "keras_unikd.terms.crd",
    **dict.fromkeys(
        ("SimilarityPreserving", "ProbabilisticTransfer", "RelationalKD"),
        "keras_unikd.terms.relational",
    ),
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)
