from keras_unikd.layers.aggregator import FusionBlock
from keras_unikd.layers.aggregator import MultiStageAggregator
from keras_unikd.layers.distribution import DistributionHead
