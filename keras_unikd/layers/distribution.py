"""UniKD's Feature Distribution Prediction (FDP) as a Keras layer."""

import keras
from keras import ops

from keras_unikd.initializers import TorchDefaultUniform
from keras_unikd.layers.pooling import global_pool
from keras_unikd.validation import check_positive_int

OUTPUT_KEYS = ("mu", "log_var", "z")


@keras.saving.register_keras_serializable(package="keras_unikd")
class DistributionHead(keras.layers.Layer):
    """Predicts a diagonal Gaussian over the classes from a feature (UniKD's FDP).

    A feature map is global-average-pooled (a vector is used as is), then two
    dense layers give the mean `mu` and the log-variance `log_var` of a
    Gaussian over `num_classes` logits. When sampling, a reparameterised
    sample `z = mu + exp(log_var / 2) * eps`, `eps ~ N(0, I)`, is drawn with a
    fresh `eps` at every call; otherwise `z = mu`. The outputs are float32
    even under a mixed-precision policy.

    Both dense layers are initialised as the reference's `nn.Linear(C, K)`,
    PyTorch's default: kernel and bias uniform in `+-1/sqrt(C)`, `C` being the
    feature's channels (`TorchDefaultUniform`).

    Args:
        num_classes: Number of classes `K`.
        seed: Optional int seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: Base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, H, W, C)` map or `(batch, C)` vector.
        training: Python bool; sampling is on while training.
        sample: Optional Python bool overriding `training` for sampling
            (`sample=False` gives `z == mu`).

    Returns:
        A dict of three float32 `(batch, num_classes)` tensors: `"mu"`,
        `"log_var"` and `"z"`.

    Example:

    >>> import numpy as np
    >>> head = DistributionHead(num_classes=10, seed=0)
    >>> outputs = head(np.ones((4, 7, 7, 32), "float32"), training=True)
    >>> sorted(outputs), tuple(outputs["z"].shape)
    (['log_var', 'mu', 'z'], (4, 10))
    """

    def __init__(self, num_classes, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="noise_seed")

    def _dense(self, fan_in, name):
        # New initializers per layer: a shared unseeded one repeats its values.
        return keras.layers.Dense(
            self.num_classes,
            kernel_initializer=TorchDefaultUniform(),
            bias_initializer=TorchDefaultUniform(fan_in=fan_in),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        if len(input_shape) not in (2, 4):
            raise ValueError(
                f"{self.name} expects a (batch, H, W, C) map or a (batch, C) "
                f"vector; got shape {tuple(input_shape)}."
            )
        if input_shape[-1] is None:
            raise ValueError(
                f"{self.name} needs a known channel count; got shape "
                f"{tuple(input_shape)}."
            )
        pooled_shape = (input_shape[0], input_shape[-1])
        # The bias bound needs the input channels: the layers are made here.
        channels = int(input_shape[-1])
        self.mean_dense = self._dense(channels, "mean")
        self.log_var_dense = self._dense(channels, "log_var")
        self.mean_dense.build(pooled_shape)
        self.log_var_dense.build(pooled_shape)
        self.built = True

    @staticmethod
    def pool(inputs):
        """The head's first step, `keras_unikd.layers.pooling.global_pool`.

        A `(batch, H, W, C)` map is averaged over H and W, a `(batch, C)`
        vector returned as is, so a head fed the pooled vector (e.g. from a
        teacher-output cache) gives what it gives for the map.
        """
        return global_pool(inputs)

    def call(self, inputs, training=False, sample=None):
        pooled = self.pool(inputs)
        mu = ops.cast(self.mean_dense(pooled), "float32")
        log_var = ops.cast(self.log_var_dense(pooled), "float32")
        if sample is None:
            sample = bool(training)
        if sample:
            noise = keras.random.normal(
                ops.shape(mu), dtype="float32", seed=self.seed_generator
            )
            z = mu + ops.exp(0.5 * log_var) * noise
        else:
            z = mu
        return {"mu": mu, "log_var": log_var, "z": z}

    def compute_output_spec(self, inputs, training=False, sample=None):
        shape = (inputs.shape[0], self.num_classes)
        return {key: keras.KerasTensor(shape, "float32") for key in OUTPUT_KEYS}

    def save_own_variables(self, store):
        # The head's weights live in its dense sublayers; its own state is the
        # noise generator's, saved so that a reloaded model draws the same
        # noise as the original would have.
        store["noise_seed_state"] = self.seed_generator.state

    def load_own_variables(self, store):
        self.seed_generator.state.assign(store["noise_seed_state"])

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "seed": self.seed})
        return config
