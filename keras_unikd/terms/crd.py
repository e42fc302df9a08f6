"""Contrastive representation distillation (CRD, Tian et al., ICLR 2020)."""

import keras
import numpy as np
from keras import ops

from keras_unikd import losses
from keras_unikd.initializers import TorchDefaultUniform
from keras_unikd.layers.pooling import global_pool
from keras_unikd.terms.base import AUTO_FEATURES
from keras_unikd.terms.base import DistillationTerm
from keras_unikd.terms.base import feature_needs
from keras_unikd.terms.base import one_layer_path
from keras_unikd.terms.base import one_path_config
from keras_unikd.validation import check_choice
from keras_unikd.validation import check_positive
from keras_unikd.validation import check_positive_int

#: How the negatives are drawn: from the examples of other classes (the
#: reference's "exact" mode, which needs the training labels) or from all
#: examples (the reference's own sampler when no indices are given).
NEGATIVES = ("other_classes", "uniform")
# ContrastLoss's eps.
NCE_EPSILON = 1e-7
# The key of the negatives' random state in a saved Distiller.
_SEED_STATE = "negatives_seed_state"
_KIND = "ContrastiveRepresentation"


def _known_values(tensor):
    """`tensor` as NumPy when its values are known now (eager), else `None` (traced)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return None
    elif backend == "jax":
        import jax

        if isinstance(tensor, jax.core.Tracer):
            return None
    elif backend == "torch":
        import torch

        if torch.compiler.is_compiling():
            return None
    return np.asarray(ops.convert_to_numpy(tensor))


def _replicas():
    """How many replicas a TensorFlow `tf.distribute` step runs on; 1 elsewhere."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def _labels_array(labels):
    """The training labels as int32 `(N,)`, checked: class ids of two classes or more."""
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[-1] == 1:
        array = array[:, 0]
    whole = np.issubdtype(array.dtype, np.integer) or (
        np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0)
    )
    if array.ndim != 1 or not whole or array.size == 0 or array.min() < 0:
        raise ValueError(
            f"{_KIND} labels must be the training set's sparse class ids, integers >= 0 "
            f"of shape (num_examples,), in the order of the example indices; got an array "
            f"of shape {array.shape} and dtype {array.dtype}."
        )
    if len(np.unique(array)) < 2:
        raise ValueError(
            f"{_KIND} draws its negatives from the examples of other classes, but the "
            "labels hold one class; give the whole training set's labels, or "
            "negatives='uniform'."
        )
    return array.astype("int32")


def _check_momentum(momentum):
    if (
        isinstance(momentum, bool)
        or not isinstance(momentum, (int, float))
        or not (0 <= momentum < 1)
    ):
        raise ValueError(
            f"{_KIND} momentum must be a number in [0, 1) (the bank keeps that share of "
            f"its old row; 0.5 in the reference); got {momentum!r}."
        )
    return float(momentum)


@keras.saving.register_keras_serializable(package="keras_unikd")
class ContrastiveRepresentation(DistillationTerm):
    """Contrastive representation distillation (`crd_loss`).

    Each network's feature, spatially averaged (the pooled vector),
    goes through its own embedding head (a linear layer to `embedding_dim`,
    then L2 normalisation), giving unit vectors `s_i` (student) and `t_i`
    (teacher). Two memory banks hold one unit vector per training example:
    `M_s` (student embeddings) and `M_t` (teacher embeddings). For example
    `i` (its row in the training set) and its contrast indices `c_i0 = i`
    (the positive) and `c_i1..c_iK` (the negatives), the scores are

    `P^s_ik = exp(M_t[c_ik] . s_i / T) / Z_s`,
    `P^t_ik = exp(M_s[c_ik] . t_i / T) / Z_t`,

    with `Z_s`, `Z_t` set once, on the first training batch, to the mean of
    its unnormalised scores times `N`. With `m = K / N` (NCE's noise term,
    `K` noise samples of a uniform `1/N`), each network's NCE loss per
    example is

    `l(P)_i = -log(P_i0 / (P_i0 + m + eps)) - sum_k log(m / (P_ik + m + eps))`,

    and `crd_loss = weight * mean_i [l(P^s)_i + l(P^t)_i]`. After the loss,
    a training step moves the banks' rows of the batch towards its
    embeddings and renormalises them:
    `M_s[i] <- normalise(momentum * M_s[i] + (1 - momentum) * s_i)`,
    likewise `M_t[i]` with `t_i`.

    This follows the reference code (megvii-research/mdistiller,
    `distillers/CRD.py` with `dataset/cifar100.py`'s `CIFAR100InstanceSample`,
    which produced the published CIFAR-100 baseline): embedding 128, `K =
    16384` negatives, momentum 0.5, `T = 0.07`, `eps = 1e-7`, weight 0.8
    next to a cross-entropy of weight 1, on the pooled features, mode
    "exact": the positive is the example itself and the negatives are drawn
    uniformly, without replacement, from the examples of the other classes
    (with replacement when a class has fewer than `K` of them). As in the
    code, the banks are read without gradient, both embedding heads are
    trained (the teacher's through `P^t`), the memory rows are read before
    the batch's update, and `Z` is a constant. The banks start uniform in
    `+-1 / sqrt(embedding_dim / 3)` and the heads as PyTorch's `nn.Linear`.

    Departures, all in how the draw is made, not in the loss: the negatives
    are drawn inside the training step (`keras.random`, with the term's
    `seed`) rather than by the data loader, with the same distribution;
    with `negatives="uniform"` (no labels) they are drawn with replacement
    from all examples (the reference's `ContrastMemory` sampler, used when no
    contrast indices are given), so an example may be its own negative.
    Duplicate example indices in one batch update their bank rows in an
    unspecified order (as the reference's `index_copy_`).

    Batches: the term reads each example's row in the training set, so the
    Distiller's batches must carry it, `({"inputs": x, "example_index":
    index}, labels)` (`with_example_index=True` in the `keras_unikd.data`
    pipelines and in `cached_teacher_pipeline`, or
    `keras_unikd.data.with_example_index(x, y)`); batches without it are a
    `ValueError` naming that fix. The teacher's feature is read pooled, so a
    teacher-output cache can serve this term.

    State: the banks, `Z_s`, `Z_t`, the labels and the negatives' random
    state are non-trainable variables of the term, saved and restored with
    the Distiller. The banks and `Z` change only in training steps
    (`record.training`: `fit`, `train_on_batch`,
    `compute_distillation_losses(..., training=True)`), never in
    `evaluate` nor in `compute_distillation_losses(..., training=False)`,
    which normalises by the batch's own `Z` until the first training step
    has set it.

    Checks: an index outside `[0, num_examples)` (a bank smaller than the
    data) or of an example without a label is a `ValueError` when the
    indices are known: at `fit`'s start (every index of array data, the
    first batch of a dataset) and in every eagerly run step (the PyTorch
    backend's default). Inside compiled steps (TensorFlow, JAX) such a batch
    gets a NaN `crd_loss` and leaves the banks and `Z` unchanged, so the
    Distiller's `NonFiniteLossGuard` stops the run naming `crd_loss`.

    Sample weights weight each example's loss (`keras_unikd.losses.batch_mean`);
    every example of the batch updates its bank rows, whatever its weight.

    Data parallelism: under JAX's `keras.distribution.DataParallel` a step
    is one program over the global batch, so the term trains as on one
    device. Under a TensorFlow `tf.distribute` strategy of several replicas
    each replica would draw its own negatives and update the banks and `Z`
    from its share of the batch, of which the first replica's is kept: a
    training step there is a `ValueError`.

    Args:
        teacher_feature: The teacher layer path (pooled if it is a map), or
            `"auto"`: the pooled vector that a `Distiller` finds (the last
            stage's map when the network has none).
        student_feature: The student layer path, or `"auto"`.
        num_examples: `N`, the training set's size: one bank row per
            example; `None` takes the length of `labels`.
        labels: The training set's class ids, `(N,)` in the order of the
            example indices, for `negatives="other_classes"`; or `None`, to
            give them later with `set_labels` (before training) or to
            restore them from a saved Distiller. Not part of the config.
        embedding_dim: Width of the embeddings (128).
        num_negatives: `K`, negatives per example (16384).
        momentum: Memory momentum (0.5).
        temperature: `T` (0.07).
        negatives: `"other_classes"` (the reference's "exact" mode) or
            `"uniform"` (all examples, no labels needed).
        seed: Optional int seed of the negatives' draws.
        weight: Weight of the loss (0.8).
        **kwargs: `DistillationTerm` arguments (`warmup_epochs`, `name`).

    Example:

    >>> import keras, numpy as np
    >>> from keras_unikd import Distiller
    >>> def network(width, name):
    ...     inputs = keras.Input((8, 8, 3))
    ...     x = keras.layers.Conv2D(width, 3, activation="relu", name=f"{name}_stage")(inputs)
    ...     x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    ...     return keras.Model(inputs, keras.layers.Dense(3)(x), name=name)
    >>> y = np.array([0, 1, 2, 0, 1, 2, 0, 1], "int32")
    >>> crd = ContrastiveRepresentation("t_pool", "s_pool", labels=y, num_negatives=4, seed=0)
    >>> distiller = Distiller(network(8, "t"), network(4, "s"), terms=[crd])
    >>> x = np.random.default_rng(0).random((8, 8, 8, 3)).astype("float32")
    >>> batch = {"inputs": x, "example_index": np.arange(8, dtype="int32")}
    >>> _, losses, _ = distiller.compute_distillation_losses(batch, y, training=False)
    >>> bool(np.isfinite(keras.ops.convert_to_numpy(losses["crd_loss"])))
    True
    >>> contrast = keras.ops.convert_to_numpy(crd.draw_contrast_indices(np.arange(8)))
    >>> contrast.shape, bool(np.all(y[contrast[:, 1:]] != y[:, None]))  # others' classes
    ((8, 5), True)
    """

    needs_example_index = True

    def __init__(
        self,
        teacher_feature=AUTO_FEATURES,
        student_feature=AUTO_FEATURES,
        num_examples=None,
        labels=None,
        embedding_dim=128,
        num_negatives=16384,
        momentum=0.5,
        temperature=0.07,
        negatives="other_classes",
        seed=None,
        weight=0.8,
        name="crd",
        **kwargs,
    ):
        super().__init__(weight=weight, name=name, **kwargs)
        if self.views != 1:
            raise ValueError(
                f"{_KIND} reads one view per example (its memory banks hold one embedding "
                f"per example); give views=1 (the default), not views={self.views}."
            )
        self.teacher_features = one_layer_path(
            teacher_feature, "teacher_feature", _KIND, allow_auto=True
        )
        self.student_features = one_layer_path(
            student_feature, "student_feature", _KIND, allow_auto=True
        )
        self.embedding_dim = check_positive_int(f"{_KIND} embedding_dim", embedding_dim)
        self.num_negatives = check_positive_int(f"{_KIND} num_negatives", num_negatives)
        self.momentum = _check_momentum(momentum)
        self.temperature = check_positive(f"{_KIND} temperature", temperature)
        self.negatives = check_choice(f"{_KIND} negatives", negatives, NEGATIVES)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="negatives_seed")
        if labels is not None and negatives == "uniform":
            raise ValueError(
                f"{_KIND} draws negatives='uniform' from all examples and reads no labels; "
                "drop labels=..., or keep them with negatives='other_classes'."
            )
        labels = None if labels is None else _labels_array(labels)
        if num_examples is not None:
            check_positive_int(f"{_KIND} num_examples", num_examples)
        self.num_examples = num_examples  # None: taken from the labels
        self._pending_labels = None if labels is None else self._checked_length(labels)

    # ------------------------------------------------------------------
    # Features, labels, state
    # ------------------------------------------------------------------

    def choose_auto_features(self, teacher, student):
        """`"auto"`: each network's pooled vector (the reference's `pooled_feat`),
        or its last stage's map, which the term pools, when it has none."""
        for side, taps in (("teacher", teacher), ("student", student)):
            if taps is not None:
                setattr(self, f"{side}_features", taps.pooled_or_deepest())

    def teacher_needs(self):
        return feature_needs(self, "", pooled=True)

    def _checked_length(self, labels):
        if self.num_examples is None and not self.built:
            self.num_examples = check_positive_int(f"{_KIND} num_examples", len(labels))
        if len(labels) != self.num_examples:
            raise ValueError(
                f"{_KIND} labels hold {len(labels)} entries for num_examples="
                f"{self.num_examples}: give one label per training example, in the order "
                "of the example indices."
            )
        return labels

    def set_labels(self, labels):
        """Gives the training set's class ids, `(num_examples,)`, for the negatives.

        Before or after the term is built (by its `Distiller`); they replace
        any given before, and are saved with the Distiller.

        Raises:
            ValueError: for labels of another length than `num_examples`,
                not class ids, or of one class; or with `negatives="uniform"`.
        """
        if self.negatives != "other_classes":
            raise ValueError(
                f"{_KIND} with negatives={self.negatives!r} reads no labels; build it with "
                "negatives='other_classes' to draw negatives from other classes."
            )
        labels = self._checked_length(_labels_array(labels))
        if self.built:
            self.labels.assign(labels)
        else:
            self._pending_labels = labels

    def build(self, shapes):
        if AUTO_FEATURES in (self.teacher_features, self.student_features):
            raise ValueError(
                f"{_KIND} '{self.name}' cannot be built while teacher_feature or "
                "student_feature is 'auto', which the Distiller resolves from the models "
                "first. Use the term in a Distiller, or give layer names."
            )
        if self.num_examples is None:
            raise ValueError(
                f"{_KIND} needs the training set's size for its memory banks: give "
                "num_examples=len(x_train), or labels=y_train (whose length it takes; "
                "method 'crd': train_labels=y_train), before the Distiller builds it."
            )
        self.student_embedding = self._embedding(shapes.student, self.student_features, "student")
        self.teacher_embedding = self._embedding(shapes.teacher, self.teacher_features, "teacher")
        bound = 1.0 / np.sqrt(self.embedding_dim / 3.0)
        for side in ("student", "teacher"):
            memory = self._state(
                f"{side}_memory",
                (self.num_examples, self.embedding_dim),
                keras.initializers.RandomUniform(-bound, bound),
            )
            setattr(self, f"{side}_memory", memory)
            setattr(self, f"{side}_normalizer", self._state(f"{side}_normalizer", (), -1.0))
        if self.negatives == "other_classes":
            pending = self._pending_labels
            initial = -1 if pending is None else lambda shape, dtype: ops.cast(pending, dtype)
            self.labels = self._state("labels", (self.num_examples,), initial, "int32")
            self._pending_labels = None

    def _state(self, name, shape, initializer, dtype="float32"):
        if not callable(initializer):
            initializer = keras.initializers.Constant(initializer)
        return self.add_weight(
            shape=shape,
            initializer=initializer,
            dtype=dtype,
            trainable=False,
            aggregation="only_first_replica",
            name=name,
        )

    def _embedding(self, shapes, paths, side):
        shape = shapes[paths[0]]
        if len(shape) not in (2, 4) or shape[-1] is None:
            raise ValueError(
                f"{_KIND} embeds each network's pooled vector: give a (batch, C) vector or "
                f"a (batch, H, W, C) map with known C, which it pools; {side} layer "
                f"{paths[0]!r} gives shape {tuple(shape)}."
            )
        head = keras.layers.Dense(
            self.embedding_dim,
            kernel_initializer=TorchDefaultUniform(),
            bias_initializer=TorchDefaultUniform(fan_in=int(shape[-1])),
            dtype=self.dtype_policy,
            name=f"{side}_embedding",
        )
        head.build((None, int(shape[-1])))
        return head

    def save_own_variables(self, store):
        super().save_own_variables(store)
        # A reloaded Distiller draws the negatives the original would have.
        store[_SEED_STATE] = self.seed_generator.state

    def load_own_variables(self, store):
        self.seed_generator.state.assign(store[_SEED_STATE])
        super().load_own_variables({key: store[key] for key in store.keys() if key != _SEED_STATE})

    # ------------------------------------------------------------------
    # The loss
    # ------------------------------------------------------------------

    def embed(self, student_feature, teacher_feature):
        """`(s, t)`: the unit float32 embeddings `(batch, embedding_dim)` of both features."""

        def unit(head, feature):
            pooled = ops.cast(global_pool(feature), "float32")
            return losses.l2_normalize(ops.cast(head(pooled), "float32"))

        return (
            unit(self.student_embedding, student_feature),
            unit(self.teacher_embedding, ops.stop_gradient(teacher_feature)),
        )

    def draw_contrast_indices(self, example_index):
        """The contrast indices of a batch: int32 `(batch, 1 + num_negatives)`.

        Column 0 is `example_index` (the positive), the others the
        negatives, drawn with the term's random state (which advances).
        """
        index = ops.cast(ops.reshape(example_index, (-1,)), "int32")
        batch = ops.shape(index)[0]
        if self.negatives == "uniform":
            negatives = keras.random.randint(
                (batch, self.num_negatives), 0, self.num_examples, "int32", self.seed_generator
            )
        else:
            negatives = self._other_class_negatives(index, batch)
        return ops.concatenate([index[:, None], negatives], axis=1)

    def _other_class_negatives(self, index, batch):
        """`K` examples of other classes per example: without replacement where a
        class has `K` or more of them (a uniform random subset, the top `K` of
        uniform keys), else with replacement (the reference's `np.random.choice`)."""
        n, k = self.num_examples, self.num_negatives
        labels = ops.convert_to_tensor(self.labels)
        classes = ops.take(labels, ops.clip(index, 0, n - 1), axis=0)
        same = ops.equal(labels[None, :], classes[:, None])
        others = n - ops.sum(ops.cast(same, "int32"), axis=1)
        # With replacement: the j-th example of other classes, j uniform in
        # [0, others), in the examples sorted by class.
        below = ops.sum(ops.cast(labels[None, :] < classes[:, None], "int32"), axis=1)
        draw = keras.random.randint((batch, k), 0, 2**31 - 1, "int32", self.seed_generator)
        draw = draw % ops.maximum(others, 1)[:, None]
        position = ops.where(draw < below[:, None], draw, draw + (n - others)[:, None])
        replaced = ops.take(ops.argsort(labels), position, axis=0)
        if k > n:
            return replaced
        keys = keras.random.uniform((batch, n), dtype="float32", seed=self.seed_generator)
        _, distinct = ops.top_k(ops.where(same, -1.0, keys), k)
        return ops.where((others >= k)[:, None], ops.cast(distinct, "int32"), replaced)

    def _scores(self, embedding, memory, contrast_index):
        """`exp(memory[c_ik] . embedding_i / T)`, `(batch, 1 + K)`, the memory under
        stop-gradient. A copy of the memory is read: the update assigns it in place
        (PyTorch), which would change what autograd saved."""
        memory = ops.stop_gradient(ops.copy(ops.convert_to_tensor(memory)))
        dots = ops.matmul(embedding, ops.transpose(memory))
        return ops.exp(ops.take_along_axis(dots, contrast_index, axis=1) / self.temperature)

    def _nce(self, scores):
        """ContrastLoss per example: the positive in column 0, `K` negatives after it."""
        noise = self.num_negatives / self.num_examples
        positive, negative = scores[:, 0], scores[:, 1:]
        log_positive = ops.log(positive / (positive + noise + NCE_EPSILON))
        log_negative = ops.log(noise / (negative + noise + NCE_EPSILON))
        return -(log_positive + ops.sum(log_negative, axis=1))

    def contrast_loss(self, student, teacher, contrast_index, sample_weight=None):
        """The NCE loss of given embeddings and contrast indices, unweighted by `weight`.

        Args:
            student: Student embeddings `(batch, embedding_dim)` (see `embed`).
            teacher: Teacher embeddings, the same shape.
            contrast_index: `(batch, 1 + num_negatives)` rows of the banks,
                the positive first (see `draw_contrast_indices`).
            sample_weight: Optional `(batch,)` weights.

        Returns:
            `(loss, (Z_s, Z_t))`: the float32 loss and the normalisers it
            used (the stored ones, or this batch's before they are set).
        """
        contrast_index = ops.cast(contrast_index, "int32")
        per_example = 0.0
        normalizers = []
        for embedding, memory, stored in (
            (student, self.teacher_memory, self.student_normalizer),
            (teacher, self.student_memory, self.teacher_normalizer),
        ):
            scores = self._scores(embedding, memory, contrast_index)
            stored = ops.convert_to_tensor(stored)
            estimate = ops.stop_gradient(ops.mean(scores)) * float(self.num_examples)
            normalizer = ops.where(stored < 0, estimate, stored)
            normalizers.append(normalizer)
            per_example = per_example + self._nce(scores / normalizer)
        return losses.batch_mean(per_example, sample_weight), tuple(normalizers)

    def check_example_index(self, example_index):
        """Raises `ValueError` for indices outside the banks or of unlabelled examples."""
        index = np.asarray(example_index).reshape(-1)
        if index.size == 0:
            return
        if index.min() < 0 or index.max() >= self.num_examples:
            bad = index.max() if index.max() >= self.num_examples else index.min()
            raise ValueError(
                f"Term {self.name!r} holds a memory bank of num_examples="
                f"{self.num_examples} rows, but the data has example index {int(bad)}: give "
                f"{_KIND}(num_examples=<the training set's size>), with indices in "
                "[0, num_examples), the examples' rows in the training set."
            )
        if self.negatives == "other_classes" and self.built:
            classes = np.asarray(ops.convert_to_numpy(ops.take(self.labels, index, axis=0)))
            if classes.min() < 0:
                raise ValueError(
                    f"Term {self.name!r} draws negatives from other classes but has no labels "
                    f"for the examples: give {_KIND}(labels=y_train) or call "
                    f"set_labels(y_train) before training (or negatives='uniform')."
                )

    def _valid(self, index):
        """Whether every index has a bank row (and a label): a bool scalar tensor."""
        values = _known_values(index)
        if values is not None:
            self.check_example_index(values)
        valid = ops.all(ops.logical_and(index >= 0, index < self.num_examples))
        if self.negatives == "other_classes":
            safe = ops.clip(index, 0, self.num_examples - 1)
            valid = ops.logical_and(valid, ops.all(ops.take(self.labels, safe, axis=0) >= 0))
        return valid

    def _update(self, index, student, teacher, normalizers, valid):
        """The momentum update of the batch's bank rows, and `Z`, unless `valid` is false."""
        for memory, embedding in ((self.student_memory, student), (self.teacher_memory, teacher)):
            old = ops.take(memory, index, axis=0)
            rows = self.momentum * old + (1.0 - self.momentum) * ops.stop_gradient(embedding)
            rows = ops.where(valid, losses.l2_normalize(rows), old)
            memory.assign(ops.scatter_update(memory, index[:, None], rows))
        stored = (self.student_normalizer, self.teacher_normalizer)
        for variable, normalizer in zip(stored, normalizers):
            variable.assign(ops.where(valid, normalizer, ops.convert_to_tensor(variable)))

    def _check_one_replica(self):
        """Raises `ValueError` in a training step under a `tf.distribute` strategy
        of several replicas, which would train another student (see the class)."""
        replicas = _replicas()
        if replicas > 1:
            raise ValueError(
                f"{_KIND} '{self.name}' cannot train under a tf.distribute strategy of "
                f"{replicas} replicas: train it on one device, or under JAX with "
                "keras.distribution.DataParallel. Each replica would draw negatives for "
                "its share of the batch and update the memory banks and Z from it, and "
                "tf.distribute keeps the first replica's banks only: the student would "
                "differ from one device's."
            )

    def call(self, record):
        if record.example_index is None:
            raise ValueError(
                f"Term {self.name!r} ({_KIND}) reads each example's row in the training set, "
                "but the record has no example_index: feed the Distiller "
                "({'inputs': x, 'example_index': index}, labels) batches."
            )
        if record.training:
            self._check_one_replica()
        index = ops.cast(ops.reshape(record.example_index, (-1,)), "int32")
        valid = self._valid(index)
        index = ops.clip(index, 0, self.num_examples - 1)
        student, teacher = self.embed(
            record.student_features[self.student_features[0]],
            record.teacher_features[self.teacher_features[0]],
        )
        contrast_index = self.draw_contrast_indices(index)
        loss, normalizers = self.contrast_loss(
            student, teacher, contrast_index, record.sample_weight
        )
        if record.training:
            self._update(index, student, teacher, normalizers, valid)
        return {self.loss_names[0]: ops.where(valid, loss, float("nan"))}

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_feature": one_path_config(self.teacher_features),
            "student_feature": one_path_config(self.student_features),
            "num_examples": self.num_examples,
            "embedding_dim": self.embedding_dim,
            "num_negatives": self.num_negatives,
            "momentum": self.momentum,
            "temperature": self.temperature,
            "negatives": self.negatives,
            "seed": self.seed,
        }
