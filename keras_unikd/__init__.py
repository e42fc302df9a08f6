"""keras_unikd: UniKD knowledge distillation for Keras 3.

The names below are imported on first use, so that `import keras_unikd` (and
`keras-unikd --help`) does not import Keras. Keras finds the package's saved
classes (`Distiller`, the terms, the layers) once their modules are imported:
when Keras is already imported, `import keras_unikd` imports them at once;
otherwise the first use of a name does (`keras_unikd.Distiller`), or
`keras_unikd.register_serializables()` (call it before
`keras.saving.load_model` in a process that imported `keras_unikd` before
Keras and uses nothing of it).
"""

import importlib
import sys

from keras_unikd.lazy import lazy_attributes

__version__ = "0.1.0"

_MODULES = (
    "analysis", "auto_taps", "cache", "callbacks", "data", "experiments", "heads",
    "initializers", "layers", "losses", "methods", "models", "optimizers", "presets",
    "taps", "teacher_source", "terms", "tokens", "validation",
)
_NAMES = {
    **{name: f"keras_unikd.{name}" for name in _MODULES},
    "Distiller": "keras_unikd.distiller",
    "FitNetDistiller": "keras_unikd.fitnet",
    "DistributionHead": "keras_unikd.layers",
    "MultiStageAggregator": "keras_unikd.layers",
    "TorchSGD": "keras_unikd.optimizers",
    "FeatureTap": "keras_unikd.taps",
    "CachedTeacher": "keras_unikd.teacher_source",
    "OnlineTeacher": "keras_unikd.teacher_source",
    "method_terms": "keras_unikd.methods",
    # Deprecated: keras_unikd.cache (importing it warns).
    "teacher_cache": "keras_unikd.teacher_cache",
}
# The modules that register the classes a saved Distiller names.
_SERIALIZABLES = (
    "keras_unikd.distiller",
    "keras_unikd.fitnet",
    "keras_unikd.terms.logits",
    "keras_unikd.terms.unikd",
    "keras_unikd.terms.fitnet",
    "keras_unikd.layers",
    "keras_unikd.initializers",
    "keras_unikd.optimizers",
    "keras_unikd.teacher_source",
)
_lazy_getattr, __dir__ = lazy_attributes(__name__, _NAMES)


def register_serializables():
    """Imports every module whose classes a saved `.keras` file may name.

    Then `keras.saving.load_model` finds the `Distiller`, the terms, the
    layers, the optimizer and the initializer of a saved distillation.
    """
    for module in _SERIALIZABLES:
        importlib.import_module(module)


def __getattr__(name):
    value = _lazy_getattr(name)
    if name not in _MODULES and name != "teacher_cache":
        # A class or function of the package (modules are imported as such,
        # `from keras_unikd import terms` included, and register nothing).
        register_serializables()
    return value


if "keras" in sys.modules:
    register_serializables()
