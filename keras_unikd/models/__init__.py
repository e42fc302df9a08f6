"""Model builders: the CIFAR-100 KD benchmark zoo and the small demo CNNs.

Every model is a functional `keras.Model` whose stage outputs are named
layers (`stem`, `stage1`, ..., `stage1_preact`, ..., `pool`, `logits`), so a
`keras_unikd.Distiller` can tap them by name.
"""

from keras_unikd.models.cifar_resnet import resnet8
from keras_unikd.models.cifar_resnet import resnet8x4
from keras_unikd.models.cifar_resnet import resnet14
from keras_unikd.models.cifar_resnet import resnet20
from keras_unikd.models.cifar_resnet import resnet32
from keras_unikd.models.cifar_resnet import resnet32x4
from keras_unikd.models.cifar_resnet import resnet44
from keras_unikd.models.cifar_resnet import resnet56
from keras_unikd.models.cifar_resnet import resnet110
from keras_unikd.models.cifar_resnet_v2 import resnet18
from keras_unikd.models.cifar_resnet_v2 import resnet34
from keras_unikd.models.cifar_resnet_v2 import resnet50
from keras_unikd.models.mobilenet_v2 import mobilenetv2
from keras_unikd.models.registry import CIFAR_MODELS
from keras_unikd.models.registry import EXACT_PARAMS
from keras_unikd.models.registry import PUBLISHED_PARAMS
from keras_unikd.models.registry import feature_tap_names
from keras_unikd.models.registry import get_model
from keras_unikd.models.shufflenet import shufflenetv1
from keras_unikd.models.shufflenet import shufflenetv2
from keras_unikd.models.small_cnn import fashion_student
from keras_unikd.models.small_cnn import fashion_teacher
from keras_unikd.models.vgg import vgg8
from keras_unikd.models.vgg import vgg11
from keras_unikd.models.vgg import vgg13
from keras_unikd.models.vgg import vgg16
from keras_unikd.models.vgg import vgg19
from keras_unikd.models.wide_resnet import wide_resnet
from keras_unikd.models.wide_resnet import wrn_16_1
from keras_unikd.models.wide_resnet import wrn_16_2
from keras_unikd.models.wide_resnet import wrn_40_1
from keras_unikd.models.wide_resnet import wrn_40_2
