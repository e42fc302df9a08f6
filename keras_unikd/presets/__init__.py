"""The UniKD paper's experiments as presets: one record per teacher/student pair
and recipe.

A `Preset` is plain data (a frozen dataclass): which teacher and student,
which dataset, the student's and the teacher's training recipes, the
published accuracies, and in one mapping (`Preset.methods`) the settings the
pair gives each method of the method table (`keras_unikd.methods`). The DKD
paper's pairs carry its recipe; `<pair>_mlkd` carry MLKD's, and
`cifar100_resnet32x4_resnet8x4_unimlkd` the UniKD authors' UniMLKD recipe.
The package has two modules:

- `recipes`: the records, the registry of the paper's experiments
  (`PRESETS`, `get_preset`, `list_presets`) and the sources of the numbers;
- `builders`: the helpers that turn a preset into Keras objects:
  `build_models(preset)`, `build_optimizer(preset, steps_per_epoch)` (a
  `keras_unikd.TorchSGD`, PyTorch's form of momentum SGD),
  `build_terms(preset, method)`, `build_distiller(preset, teacher,
  student, method)` (a method or a variant) and
  `compile_for_training(preset, model, optimizer)`.

Every name is also available from `keras_unikd.presets` itself; the method
table's `METHODS`, `VARIANTS` and `TWO_VIEW_METHODS` too. The builders (and
Keras) are imported on first use.

Example:

```python
from keras_unikd import presets

preset = presets.get_preset("cifar100_resnet32x4_resnet8x4")
teacher, student = presets.build_models(preset)
optimizer = presets.build_optimizer(preset, steps_per_epoch=782)
distiller = presets.build_distiller(preset, teacher, student, "unikd")
presets.compile_for_training(preset, distiller, optimizer)
```
"""

from keras_unikd.lazy import lazy_attributes
from keras_unikd.presets.recipes import CIFAR100
from keras_unikd.presets.recipes import CIFAR_LIGHT_STUDENT_RECIPE
from keras_unikd.presets.recipes import CIFAR_RECIPE
from keras_unikd.presets.recipes import CIFAR_STUDENT_FEATURES
from keras_unikd.presets.recipes import CIFAR_STUDENT_FEATURES_4
from keras_unikd.presets.recipes import FITNET_FEATURE
from keras_unikd.presets.recipes import IMAGENET
from keras_unikd.presets.recipes import IMAGENET_RECIPE
from keras_unikd.presets.recipes import IMAGENET_TEACHER_RECIPE
from keras_unikd.presets.recipes import MLKD_LIGHT_STUDENT_RECIPE
from keras_unikd.presets.recipes import MLKD_RECIPE
from keras_unikd.presets.recipes import MLKD_SHUFFLENET_RECIPE
from keras_unikd.presets.recipes import MODEL_TAPS
from keras_unikd.presets.recipes import PRESETS
from keras_unikd.presets.recipes import TEACHER_FEATURES
from keras_unikd.presets.recipes import UNIMLKD_RECIPE
from keras_unikd.presets.recipes import Preset
from keras_unikd.presets.recipes import Published
from keras_unikd.presets.recipes import Recipe
from keras_unikd.presets.recipes import get_preset
from keras_unikd.presets.recipes import layer_names
from keras_unikd.presets.recipes import list_presets
from keras_unikd.presets.recipes import pair_methods

__getattr__, _lazy_dir = lazy_attributes(
    __name__,
    {
        **dict.fromkeys(
            (
                "MODEL_BUILDERS",
                "build_distiller",
                "build_model",
                "build_models",
                "build_optimizer",
                "build_terms",
                "compile_for_training",
                "learning_rate_schedule",
                "training_metrics",
            ),
            "keras_unikd.presets.builders",
        ),
        **dict.fromkeys(("METHODS", "TWO_VIEW_METHODS", "VARIANTS"), "keras_unikd.methods"),
        # Deprecated (presets use keras_unikd.TorchSGD); the name stays for old code.
        "CoupledWeightDecaySGD": "keras_unikd.optimizers",
    },
)


def __dir__():
    return sorted(set(globals()) | set(_lazy_dir()))
