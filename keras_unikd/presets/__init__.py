"""The UniKD paper's experiments as presets: one record per teacher/student pair
and recipe.

A `Preset` is plain data (a frozen dataclass): which teacher and student,
which dataset, which layers are tapped, the loss hyper-parameters of every
method (UniKD, UniMLKD, DKD, MLKD, KD, FitNet and the student alone), the
student's training recipe, whether it trains on two views, the teacher's
training recipe and the published accuracies. The DKD paper's pairs carry
its recipe; `<pair>_mlkd` carry MLKD's, and
`cifar100_resnet32x4_resnet8x4_unimlkd` the UniKD authors' UniMLKD recipe.
The package has three modules:

- `recipes`: the records, the registry of the paper's experiments
  (`PRESETS`, `get_preset`, `list_presets`) and the sources of the numbers;
- `methods`: the distillation methods by name (`METHODS`, the two-view
  ones `TWO_VIEW_METHODS`) and the variants of them (`VARIANTS`,
  `variant_kwargs`: the ablations and each `+ls`, logit standardization);
- `builders`: the helpers that turn a preset into Keras objects:
  `build_models(preset)`, `build_optimizer(preset, steps_per_epoch)` (a
  `keras_unikd.TorchSGD`, PyTorch's form of momentum SGD),
  `build_distiller(preset, teacher, student, method)` (a method or a
  variant) and
  `compile_for_training(preset, model, optimizer)`.

Every name is also available from `keras_unikd.presets` itself.

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

# Deprecated (presets use keras_unikd.TorchSGD); the name stays for old code.
from keras_unikd.optimizers import CoupledWeightDecaySGD
from keras_unikd.presets.builders import MODEL_BUILDERS
from keras_unikd.presets.builders import build_distiller
from keras_unikd.presets.builders import build_model
from keras_unikd.presets.builders import build_models
from keras_unikd.presets.builders import build_optimizer
from keras_unikd.presets.builders import compile_for_training
from keras_unikd.presets.builders import distiller_kwargs
from keras_unikd.presets.builders import learning_rate_schedule
from keras_unikd.presets.builders import training_metrics
from keras_unikd.presets.methods import METHODS
from keras_unikd.presets.methods import TWO_VIEW_METHODS
from keras_unikd.presets.methods import VARIANTS
from keras_unikd.presets.methods import variant_kwargs
from keras_unikd.presets.recipes import CIFAR100
from keras_unikd.presets.recipes import CIFAR_LIGHT_STUDENT_RECIPE
from keras_unikd.presets.recipes import CIFAR_RECIPE
from keras_unikd.presets.recipes import CIFAR_STUDENT_FEATURES
from keras_unikd.presets.recipes import CIFAR_STUDENT_FEATURES_4
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
