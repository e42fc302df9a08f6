"""Distillation terms: Keras layers that a `keras_unikd.Distiller` sums.

`DistillationTerm` is the interface; the built-in terms are `CrossEntropy`,
`KD`, `DKD`, `MLKD`, `UniKDFeatures` and `FitNetHint`.
"""

from keras_unikd.terms.base import DistillationTerm
from keras_unikd.terms.base import ForwardRecord
from keras_unikd.terms.base import ForwardShapes
from keras_unikd.terms.base import TeacherNeeds
from keras_unikd.terms.fitnet import FitNetHint
from keras_unikd.terms.logits import DKD
from keras_unikd.terms.logits import KD
from keras_unikd.terms.logits import MLKD
from keras_unikd.terms.logits import CrossEntropy
from keras_unikd.terms.unikd import UniKDFeatures
