"""ReviewKD (Chen et al., CVPR 2021): the student's stages fused deepest first,
each fused stage matched to a teacher stage by the hierarchical context loss."""

import keras
from keras import ops

from keras_unikd import losses
from keras_unikd.layers.aggregator import DEFAULT_MAX_MID_CHANNELS
from keras_unikd.layers.aggregator import FusionBlock
from keras_unikd.layers.aggregator import as_map
from keras_unikd.layers.aggregator import as_map_shape
from keras_unikd.layers.pooling import adaptive_average_pool
from keras_unikd.terms.base import AUTO_FEATURES
from keras_unikd.terms.base import DistillationTerm
from keras_unikd.terms.base import as_layer_paths
from keras_unikd.terms.base import feature_needs
from keras_unikd.terms.base import paths_config
from keras_unikd.validation import check_positive_int

# The hierarchical context loss's pyramid: the whole map, then adaptive
# average pools to these sizes (those smaller than the map), with weights
# 1/2, 1/4, 1/8 in turn.
HCL_LEVELS = (4, 2, 1)


def hcl_per_example(student, teacher):
    """ReviewKD's hierarchical context loss of two equal maps, per example: `(batch,)`.

    `(mse(s, t) + sum_l w_l mse(P_l s, P_l t)) / (1 + sum_l w_l)` over the
    levels `l` of `HCL_LEVELS` smaller than the maps' height, `P_l` PyTorch's
    adaptive average pooling to `l x l` and `w_l` halving from 1/2 over the
    levels used; each `mse` a mean over the positions and channels, in
    float32.
    """
    difference = ops.cast(student, "float32") - ops.cast(teacher, "float32")
    loss = ops.mean(ops.square(difference), axis=(1, 2, 3))
    weight, total = 1.0, 1.0
    for level in HCL_LEVELS:
        if level >= difference.shape[1]:
            continue
        weight /= 2.0
        # Pooling is linear: the pooled difference is the difference of the pools.
        pooled = adaptive_average_pool(difference, (level, level))
        loss = loss + weight * ops.mean(ops.square(pooled), axis=(1, 2, 3))
        total += weight
    return loss / total


@keras.saving.register_keras_serializable(package="keras_unikd")
class ReviewKD(DistillationTerm):
    """Knowledge review: fused student stages against teacher stages (`reviewkd_loss`).

    The student's features `x_1..x_n` (shallow to deep: its stages, then
    its pooled vector as a 1x1 map) are fused deepest first by ReviewKD's
    attention-based fusion blocks (ABF, `keras_unikd.layers.FusionBlock`),
    block `k` with the residual `r` of block `k + 1`:

    - `h = BN(Conv1x1_{C_k -> M}(x_k))`, `M = min(max_mid_channels, C_n)`;
    - except for the deepest block, `r` is nearest-resized to `x_k`'s size,
      `[a, b] = Sigmoid(Conv1x1_{2M -> 2}(concat[h, r]))` and
      `h = a * h + b * r`;
    - `h` is nearest-resized to the teacher feature `t_k`'s size (and
      passed on as the next residual), and `y_k = BN(Conv3x3(h))` has
      `t_k`'s channels.

    Then, with `HCL(y, t) = (mse(y, t) + sum_l w_l mse(P_l y, P_l t)) /
    (1 + sum_l w_l)` over the pyramid levels `l` in 4, 2, 1 smaller than
    `t`'s height (`P_l`: adaptive average pooling to `l x l`, exactly as
    PyTorch's; `w_l`: 1/2, 1/4, 1/8 over the levels used),

    `reviewkd_loss = weight * min(epoch / warmup_epochs, 1) * sum_k HCL(y_k, t_k)`.

    This follows the reference code (megvii-research/mdistiller,
    `distillers/ReviewKD.py`, which produced the published CIFAR-100
    baseline) where the paper leaves the details open: the pyramid's levels,
    its halving weights and their normalisation by their sum are the
    code's, as are the batch normalisation after both convolutions of each
    ABF block and the warm-up. The code fixes the mid width at
    `min(512, C_n)` (its `MAX_MID_CHANNEL` setting is read but unused):
    `max_mid_channels` is that 512. Its student features are the three
    stages after the stem (`feats`, after ReLU; the stem's map drops out of
    a `zip`) and the pooled vector; its teacher features the same stages
    *before* their final ReLU (`preact_feats[1:]`) and the pooled vector.
    With the `keras_unikd.models` zoo that is
    `teacher_features=["stage1_preact", "stage2_preact", "stage3_preact",
    "pool"]` and `student_features=["stage1", "stage2", "stage3", "pool"]`;
    `"auto"` reads the stage ends (after ReLU) on both sides. Losses are the
    code's means over examples, positions and channels; sample weights
    weight each example's loss (`keras_unikd.losses.batch_mean`). Batch
    normalisation uses the batch's statistics in training (its running
    averages otherwise), PyTorch's momentum 0.1 and epsilon 1e-5 (Keras
    averages the biased batch variance where PyTorch averages the unbiased
    one: only losses in inference mode can tell).

    Defaults are the code's (`engine/cfg.py`): weight 1 next to a
    cross-entropy of weight 1, a warm-up of 20 epochs, mid width at most
    512. Its one CIFAR-100 recipe, `configs/cifar100/reviewkd.yaml`
    (ResNet32x4 -> ResNet8x4, 240 epochs), sets the weight to 5.

    The teacher's maps are read whole (`TeacherNeeds.feature_maps`), so a
    teacher-output cache cannot serve this term.

    Args:
        teacher_features: Teacher layer paths, shallow to deep (maps, or a
            pooled vector as a 1x1 map), or `"auto"`: the stage ends and the
            pooled vector that a `Distiller` finds (`keras_unikd.auto_taps`),
            the deepest stages of each network paired.
        student_features: Student layer paths, as many, in the same order:
            fused feature `k` is matched to teacher feature `k`. Or `"auto"`.
        weight: Weight of the loss (1 in the reference's defaults).
        warmup_epochs: Epochs of linear warm-up (20 in the reference).
        max_mid_channels: Upper bound of the fusion width `M` (512).
        **kwargs: `DistillationTerm` arguments (`name`, `views`).

    Example:

    >>> import keras
    >>> from keras_unikd import Distiller, terms
    >>> from keras_unikd.terms.reviewkd import ReviewKD
    >>> def network(width, name):
    ...     inputs = keras.Input((8, 8, 3))
    ...     x = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
    ...                             name=f"{name}_stage1")(inputs)
    ...     x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu",
    ...                             name=f"{name}_stage2")(x)
    ...     x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    ...     return keras.Model(inputs, keras.layers.Dense(4)(x), name=name)
    >>> review = ReviewKD(["t_stage1", "t_stage2", "t_pool"], ["s_stage1", "s_stage2", "s_pool"])
    >>> distiller = Distiller(network(8, "t"), network(4, "s"),
    ...                       terms=[terms.CrossEntropy(), review])
    >>> distiller.loss_term_names
    ['ce_loss', 'reviewkd_loss']
    """

    def __init__(
        self,
        teacher_features,
        student_features,
        weight=1.0,
        warmup_epochs=20,
        max_mid_channels=DEFAULT_MAX_MID_CHANNELS,
        name="reviewkd",
        **kwargs,
    ):
        super().__init__(weight=weight, warmup_epochs=warmup_epochs, name=name, **kwargs)
        check_positive_int("ReviewKD max_mid_channels", max_mid_channels)
        self.teacher_features = as_layer_paths(
            teacher_features, "teacher_features", allow_auto=True
        )
        self.student_features = as_layer_paths(
            student_features, "student_features", allow_auto=True
        )
        if AUTO_FEATURES not in (self.teacher_features, self.student_features):
            self._check_pairs()
        self.max_mid_channels = max_mid_channels

    def _check_pairs(self):
        teacher, student = self.teacher_features, self.student_features
        if not teacher or len(teacher) != len(student):
            raise ValueError(
                "ReviewKD pairs teacher and student features one to one, shallow to deep: "
                "give as many teacher_features as student_features (at least one); got "
                f"{list(teacher)} and {list(student)}."
            )

    def teacher_needs(self):
        """Not cacheable: the teacher's whole maps, matched at several pyramid levels."""
        return feature_needs(
            self,
            f"matches the teacher's full feature maps {paths_config(self.teacher_features)!r} "
            "at several pyramid levels",
        )

    def choose_auto_features(self, teacher, student):
        """`"auto"`: each network's stage ends and pooled vector (the stage ends
        alone when a network has no pooled vector, as a ViT whose class token
        is read inside its head), as many stages on both sides (the deepest)."""
        pooled = all(taps.pooled for taps in (teacher, student) if taps is not None)
        counts = []
        for taps, paths in ((teacher, self.teacher_features), (student, self.student_features)):
            if taps is None:
                counts.append(len(paths) - pooled)  # Named: its last may pair with a pooled one.
            else:
                counts.append(len(taps.require("stages", "ReviewKD").stages))
        for side, taps in (("teacher", teacher), ("student", student)):
            if taps is not None:
                last = (taps.pooled,) if pooled else ()
                setattr(self, f"{side}_features", taps.deepest(min(counts)) + last)
        self._check_pairs()

    def build(self, shapes):
        self._check_pairs()
        teacher = [_map_shape(path, shapes.teacher[path]) for path in self.teacher_features]
        student = [_map_shape(path, shapes.student[path]) for path in self.student_features]
        mid = min(self.max_mid_channels, student[-1][-1])
        self.blocks = []
        for index, (teacher_shape, student_shape) in enumerate(zip(teacher, student)):
            block = FusionBlock(
                output_channels=teacher_shape[-1],
                mid_channels=mid,
                output_size=teacher_shape[1:3],
                fuse=index < len(student) - 1,
                batch_norm=True,
                dtype=self.dtype_policy,
                name=f"abf_{index}",
            )
            block.build(student_shape)
            self.blocks.append(block)

    def fused_features(self, student_features, training=False):
        """The blocks' outputs `y_1..y_n`, shallow to deep, from the student's features."""
        outputs = [None] * len(self.blocks)
        residual = None
        for index in reversed(range(len(self.blocks))):
            outputs[index], residual = self.blocks[index](
                student_features[index], residual=residual, training=training
            )
        return outputs

    def call(self, record):
        student = [record.student_features[path] for path in self.student_features]
        per_example = 0.0
        for fused, path in zip(
            self.fused_features(student, record.training), self.teacher_features
        ):
            per_example = per_example + hcl_per_example(
                fused, as_map(record.teacher_features[path])
            )
        return {self.loss_names[0]: losses.batch_mean(per_example, record.sample_weight)}

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_features": paths_config(self.teacher_features),
            "student_features": paths_config(self.student_features),
            "max_mid_channels": self.max_mid_channels,
        }


def _map_shape(path, shape):
    """`shape` as a map's `(batch, H, W, C)` (a vector is 1x1), or a `ValueError`."""
    if len(shape) not in (2, 4):
        raise ValueError(
            f"ReviewKD reads feature maps (batch, H, W, C) or pooled vectors (batch, C); "
            f"layer {path!r} outputs shape {tuple(shape)}. Tap a convolutional stage or "
            "the pooled vector."
        )
    if any(dim is None for dim in shape[1:]):
        raise ValueError(
            f"ReviewKD needs features of known size; layer {path!r} outputs shape "
            f"{tuple(shape)}. Give the model a fixed input shape."
        )
    return as_map_shape(tuple(shape))
