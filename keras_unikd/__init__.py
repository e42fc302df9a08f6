"""keras_unikd: UniKD knowledge distillation for Keras 3."""

from keras_unikd import callbacks
from keras_unikd import initializers
from keras_unikd import losses
from keras_unikd import optimizers
from keras_unikd import teacher_cache
from keras_unikd import terms
from keras_unikd.distiller import Distiller
from keras_unikd.fitnet import FitNetDistiller
from keras_unikd.layers import DistributionHead
from keras_unikd.layers import MultiStageAggregator
from keras_unikd.optimizers import TorchSGD
from keras_unikd.taps import FeatureTap

__version__ = "0.1.0"
