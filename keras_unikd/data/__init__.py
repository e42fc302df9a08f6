"""Datasets and input pipelines for the keras_unikd demos and benchmarks."""

from keras_unikd.data.dataset import ImageDataset
from keras_unikd.data.digits import load_digits_dataset
from keras_unikd.data.digits import stratified_split
from keras_unikd.data.fashion_mnist import FASHION_MNIST_CLASSES
from keras_unikd.data.fashion_mnist import fashion_mnist_search_paths
from keras_unikd.data.fashion_mnist import load_fashion_mnist
from keras_unikd.data.fashion_mnist import read_idx
from keras_unikd.data.pipeline import channel_stats
from keras_unikd.data.pipeline import make_image_pipeline
from keras_unikd.data.pipeline import take_subset

__all__ = [
    "FASHION_MNIST_CLASSES",
    "ImageDataset",
    "channel_stats",
    "fashion_mnist_search_paths",
    "load_digits_dataset",
    "load_fashion_mnist",
    "make_image_pipeline",
    "read_idx",
    "stratified_split",
    "take_subset",
]
