"""The README's "Writing a term" example runs as printed."""

import os
import re

import keras

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def section_code(title):
    with open(README) as file:
        text = file.read()
    section = text.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_the_custom_term_example_trains():
    keras.utils.set_random_seed(0)
    namespace = {}
    exec(compile(section_code("Writing a term"), README, "exec"), namespace)
    history = namespace["history"].history
    assert sorted(history) == ["accuracy", "at_loss", "ce_loss", "kd_loss", "loss"]
    assert history["at_loss"][0] > 0
    term = namespace["distiller"].terms[-1]
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert clone.get_config() == term.get_config()
