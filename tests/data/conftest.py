"""tests/data: dataset loaders and tf.data pipelines.

Their code is TensorFlow's whatever the Keras backend, so these tests run in
the TensorFlow pass of `make test` only; a test marked `every_backend` (a
pipeline feeding a model) runs in every pass.
"""

import os

import keras
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(
        reason="tf.data code, the same under every Keras backend: runs in the TensorFlow pass"
    )
    for item in items:
        in_data = os.path.dirname(os.path.abspath(item.path)) == _HERE
        if in_data and item.get_closest_marker("every_backend") is None:
            item.add_marker(skip)
