"""Tiny transformers for the token-feature and automatic-tap tests (no downloads)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_unikd_tests")
class PrefixTokens(keras.layers.Layer):
    """Prepends `count` learned tokens (class, distillation, registers)."""

    def __init__(self, count=1, **kwargs):
        super().__init__(**kwargs)
        self.count = count

    def build(self, input_shape):
        self.tokens = self.add_weight(
            shape=(1, self.count, input_shape[-1]), initializer="random_normal", name="tokens"
        )

    def call(self, patches):
        batch = ops.shape(patches)[0]
        tokens = ops.broadcast_to(
            ops.cast(self.tokens, patches.dtype), (batch, self.count, patches.shape[-1])
        )
        return ops.concatenate([tokens, patches], axis=1)

    def get_config(self):
        return {**super().get_config(), "count": self.count}


@keras.saving.register_keras_serializable(package="keras_unikd_tests")
class FirstToken(keras.layers.Layer):
    """The class token of a token sequence."""

    def call(self, tokens):
        return tokens[:, 0, :]


def encoder_block(x, width, name):
    """Pre-norm transformer block: attention and an MLP, each with a residual."""
    h = keras.layers.LayerNormalization(name=f"{name}_norm1")(x)
    h = keras.layers.MultiHeadAttention(2, width // 2, name=f"{name}_attention")(h, h)
    x = keras.layers.Add(name=f"{name}_add1")([x, h])
    h = keras.layers.LayerNormalization(name=f"{name}_norm2")(x)
    h = keras.layers.Dense(2 * width, activation="gelu", name=f"{name}_mlp1")(h)
    h = keras.layers.Dense(width, name=f"{name}_mlp2")(h)
    return keras.layers.Add(name=f"{name}_out")([x, h])


def tiny_vit(
    name="vit", input_shape=(12, 12, 1), patch=3, width=8, prefix_tokens=1, blocks=2, classes=5
):
    """A functional ViT: patch convolution, prefix tokens, encoder blocks, class token."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, patch, strides=patch, name=f"{name}_patches")(inputs)
    grid = (input_shape[0] // patch) * (input_shape[1] // patch)
    x = keras.layers.Reshape((grid, width), name=f"{name}_tokens")(x)
    if prefix_tokens:
        x = PrefixTokens(prefix_tokens, name=f"{name}_prefix")(x)
    for index in range(blocks):
        x = encoder_block(x, width, f"{name}_block{index + 1}")
    x = keras.layers.LayerNormalization(name=f"{name}_norm")(x)
    pooled = (
        FirstToken(name=f"{name}_cls")(x)
        if prefix_tokens
        else keras.layers.GlobalAveragePooling1D(name=f"{name}_pool")(x)
    )
    logits = keras.layers.Dense(classes, name=f"{name}_logits")(pooled)
    return keras.Model(inputs, logits, name=name)


def tiny_text_classifier(name="text", length=10, vocabulary=50, width=8, classes=5):
    """Token ids -> embedding -> one encoder block -> mean pooling -> logits."""
    inputs = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(vocabulary, width, name=f"{name}_embedding")(inputs)
    x = encoder_block(x, width, f"{name}_block1")
    x = keras.layers.GlobalAveragePooling1D(name=f"{name}_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name=f"{name}_logits")(x), name=name)
