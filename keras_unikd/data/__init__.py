"""Datasets and input pipelines for the keras_unikd demos and benchmarks."""

from keras_unikd.data.cifar100 import CIFAR100_KEYED_OPTIONS
from keras_unikd.data.cifar100 import CIFAR100_MEAN
from keras_unikd.data.cifar100 import CIFAR100_STD
from keras_unikd.data.cifar100 import cifar100_datasets
from keras_unikd.data.cifar100 import cifar100_keyed_augmentation
from keras_unikd.data.cifar100 import cifar100_strong_view
from keras_unikd.data.dataset import ImageDataset
from keras_unikd.data.digits import load_digits_dataset
from keras_unikd.data.digits import stratified_split
from keras_unikd.data.example_index import with_example_index
from keras_unikd.data.fashion_mnist import FASHION_MNIST_CLASSES
from keras_unikd.data.fashion_mnist import fashion_mnist_search_paths
from keras_unikd.data.fashion_mnist import load_fashion_mnist
from keras_unikd.data.fashion_mnist import read_idx
from keras_unikd.data.imagenet import IMAGENET_MEAN
from keras_unikd.data.imagenet import IMAGENET_STD
from keras_unikd.data.imagenet import imagenet_datasets
from keras_unikd.data.keyed import KEYED_VIEWS
from keras_unikd.data.keyed import KeyedAugmentation
from keras_unikd.data.keyed import keyed_epoch_order
from keras_unikd.data.keyed import keyed_example_seed
from keras_unikd.data.keyed import keyed_steps_per_epoch
from keras_unikd.data.keyed import keyed_view_seed
from keras_unikd.data.keyed import keyed_views
from keras_unikd.data.keyed import make_keyed_image_pipeline
from keras_unikd.data.pipeline import channel_stats
from keras_unikd.data.pipeline import make_image_pipeline
from keras_unikd.data.pipeline import take_subset
from keras_unikd.data.resume import resumable

__all__ = [
    "CIFAR100_KEYED_OPTIONS",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageDataset",
    "KEYED_VIEWS",
    "KeyedAugmentation",
    "channel_stats",
    "cifar100_datasets",
    "cifar100_keyed_augmentation",
    "cifar100_strong_view",
    "fashion_mnist_search_paths",
    "imagenet_datasets",
    "keyed_epoch_order",
    "keyed_example_seed",
    "keyed_steps_per_epoch",
    "resumable",
    "keyed_view_seed",
    "keyed_views",
    "load_digits_dataset",
    "load_fashion_mnist",
    "make_image_pipeline",
    "make_keyed_image_pipeline",
    "read_idx",
    "stratified_split",
    "take_subset",
    "with_example_index",
]
