"""ReviewKD against a NumPy float64 re-derivation of the reference code
(megvii-research/mdistiller, distillers/ReviewKD.py: `ABF` and `hcl_loss`), on every backend."""

import os

import keras
import numpy as np
import pytest

import keras_unikd
from conftest import weights_of
from keras_unikd import terms
from keras_unikd.auto_taps import AutoTaps
from keras_unikd.layers import FusionBlock
from keras_unikd.layers import MultiStageAggregator
from keras_unikd.taps import FeatureTap
from keras_unikd.terms import ForwardShapes
from keras_unikd.terms.reviewkd import ReviewKD
from keras_unikd.terms.reviewkd import hcl_per_example

RNG = np.random.default_rng(3)
TEACHER = ["t_stage1_preact", "t_stage2", "t_stage3", "t_pool"]
STUDENT = ["s_stage1", "s_stage2", "s_stage3", "s_pool"]

# --- the reference, in float64 ---------------------------------------------------


def np_adaptive_pool(x, size):
    """`F.adaptive_avg_pool2d(x, (size, size))` on channels-last maps: bin i spans
    [floor(i * H / size), ceil((i + 1) * H / size))."""
    b, h, w, c = x.shape
    out = np.zeros((b, size, size, c))
    for i in range(size):
        for j in range(size):
            rows = slice(i * h // size, -(-(i + 1) * h // size))
            cols = slice(j * w // size, -(-(j + 1) * w // size))
            out[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
    return out


def np_hcl(student_maps, teacher_maps):
    """`hcl_loss`: per pair, the MSE of the maps and of their 4, 2, 1 pools smaller
    than the map, weights halving from 1/2, divided by the weights' sum; summed."""
    total = 0.0
    for fs, ft in zip(student_maps, teacher_maps):
        loss, cnt, tot = np.mean((fs - ft) ** 2), 1.0, 1.0
        for level in (4, 2, 1):
            if level >= fs.shape[1]:
                continue
            cnt /= 2.0
            loss += np.mean((np_adaptive_pool(fs, level) - np_adaptive_pool(ft, level)) ** 2) * cnt
            tot += cnt
        total += loss / tot
    return total


def np_nearest(x, size):
    rows = np.floor(np.arange(size[0]) * x.shape[1] / size[0]).astype(int)
    cols = np.floor(np.arange(size[1]) * x.shape[2] / size[1]).astype(int)
    return x[:, rows][:, :, cols]


def np_conv(x, kernel):
    """A bias-free convolution, padding k // 2 (the reference's 1x1 and 3x3)."""
    size = kernel.shape[0]
    pad = size // 2
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, w = x.shape[1] - size + 1, x.shape[2] - size + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[-1]))
    for i in range(size):
        for j in range(size):
            out += np.einsum("bhwc,cd->bhwd", x[:, i : i + h, j : j + w], kernel[i, j])
    return out


def np_bn(x, norm):
    """`nn.BatchNorm2d` in eval mode, with its running statistics."""
    gamma, beta, mean, var = (np.asarray(v, "float64") for v in weights_of(norm))
    return (x - mean) / np.sqrt(var + norm.epsilon) * gamma + beta


def np_abf(block, x, y, out_size):
    """`ABF.forward(x, y, shape, out_shape)` with the block's weights: `(output, residual)`."""
    projection, output = (
        np.asarray(weights_of(conv)[0], "float64") for conv in (block.projection, block.output_conv)
    )
    x = np_bn(np_conv(x, projection), block.projection_norm)
    if block.gate is not None:
        kernel, bias = (np.asarray(v, "float64") for v in weights_of(block.gate))
        y = np_nearest(y, x.shape[1:3])
        z = 1.0 / (1.0 + np.exp(-(np.concatenate([x, y], -1) @ kernel + bias)))
        x = x * z[..., 0:1] + y * z[..., 1:2]
    if x.shape[1:3] != tuple(out_size):
        x = np_nearest(x, out_size)
    return np_bn(np_conv(x, output), block.output_norm), x


def np_review(term, student_maps, teacher_maps):
    """`forward_train`'s fusion, deepest first: the outputs, shallow to deep."""
    x = [s[:, None, None, :] if s.ndim == 2 else s for s in student_maps]
    results, residual = [None] * len(x), None
    for k in reversed(range(len(x))):
        results[k], residual = np_abf(term.blocks[k], x[k], residual, teacher_maps[k].shape[1:3])
    return results


# --- helpers ----------------------------------------------------------------------


def maps(model, paths, x):
    _, features = FeatureTap(model, paths)(x)
    out = [np.asarray(keras.ops.convert_to_numpy(f), "float64") for f in features]
    return [f[:, None, None, :] if f.ndim == 2 else f for f in out]


def randomize_batch_norms(term):
    """Running statistics and affine weights away from their identity defaults."""
    for block in term.blocks:
        for norm in (block.projection_norm, block.output_norm):
            c = norm.gamma.shape[0]
            norm.gamma.assign(RNG.uniform(0.5, 1.5, c).astype("float32"))
            norm.beta.assign(RNG.normal(0, 0.2, c).astype("float32"))
            norm.moving_mean.assign(RNG.normal(0, 0.2, c).astype("float32"))
            norm.moving_variance.assign(RNG.uniform(0.5, 2.0, c).astype("float32"))


def value(tensor):
    return float(keras.ops.convert_to_numpy(tensor))


# --- the loss ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 8), (5, 5), (3, 3), (2, 2), (1, 1), (7, 3)])
def test_hcl_is_the_reference_at_every_map_size(size):
    # 8: levels 4, 2, 1 by plain windows; 5, 3 and 7x3: overlapping adaptive
    # bins (and 3 < 4 columns repeated); 2: level 1 only; 1: the map alone.
    s, t = (RNG.standard_normal((3, *size, 4)).astype("float32") for _ in range(2))
    got = np.mean(keras.ops.convert_to_numpy(hcl_per_example(s, t)))
    expected = np_hcl([s.astype("float64")], [t.astype("float64")])
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_loss_and_fused_features_are_the_reference(pair, batch):
    teacher, student = pair
    x, y = batch
    # Student stages at 6x6 and 3x3 against teacher stages at 12x12 (levels 4, 2,
    # 1) and 6x6 (4 by overlapping bins): the fused maps are resized to the teacher's.
    t_paths, s_paths = ["t_stage1_preact", "t_stage2", "t_pool"], ["s_stage2", "s_stage3", "s_pool"]
    review = ReviewKD(t_paths, s_paths, weight=2.0, warmup_epochs=0)
    distiller = keras_unikd.Distiller(teacher, student, terms=[review])
    randomize_batch_norms(review)
    # The mid width is min(512, the student's pooled channels); the deepest block does not fuse.
    assert [block.projection.filters for block in review.blocks] == [16] * 3
    assert [block.gate is None for block in review.blocks] == [False, False, True]
    s_maps, t_maps = maps(student, s_paths, x), maps(teacher, t_paths, x)
    expected_maps = np_review(review, s_maps, t_maps)
    fused = review.fused_features([f.astype("float32") for f in s_maps])
    for got, expected, t_map in zip(fused, expected_maps, t_maps):
        assert expected.shape == t_map.shape
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-4, atol=1e-5)
    loss = distiller.compute_distillation_losses(x, y, training=False)[1]["reviewkd_loss"]
    np.testing.assert_allclose(value(loss), 2.0 * np_hcl(expected_maps, t_maps), rtol=1e-5)
    # Sample weights weight each example's loss.
    weights = RNG.uniform(0, 2, len(x)).astype("float32")
    per_example = [
        np_hcl([m[i : i + 1] for m in expected_maps], [m[i : i + 1] for m in t_maps])
        for i in range(len(x))
    ]
    got = distiller.compute_distillation_losses(x, y, sample_weight=weights, training=False)[1]
    np.testing.assert_allclose(
        value(got["reviewkd_loss"]), 2.0 * np.mean(weights * np.array(per_example)), rtol=1e-5
    )


def test_a_fusion_block_without_batch_norm_is_a_stage_of_unikds_aff():
    # One fusion implementation: blocks with ReLU for batch norm, given the
    # aggregator's weights, give the aggregator's output.
    stage, pooled = RNG.random((2, 8, 8, 3), "float32"), RNG.random((2, 7), "float32")
    aggregator = MultiStageAggregator(output_channels=4, mid_channels=5)
    expected = keras.ops.convert_to_numpy(aggregator([stage, pooled]))
    deepest = FusionBlock(output_channels=1, mid_channels=5, fuse=False, batch_norm=False)
    block = FusionBlock(output_channels=4, mid_channels=5, batch_norm=False)
    deepest.build(pooled.shape)
    block.build(stage.shape)
    deepest.projection.set_weights(aggregator.projections[1].get_weights())
    block.projection.set_weights(aggregator.projections[0].get_weights())
    block.gate.set_weights(aggregator.gates[0].get_weights())
    block.output_conv.set_weights(aggregator.output_conv.get_weights())
    output, _ = block(stage, residual=deepest(pooled)[1])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(output), expected, rtol=1e-6)


# --- automatic taps, training, saving ------------------------------------------------


def test_auto_taps_train_the_student_save_and_load(pair, batch, tmp_path):
    teacher, student = pair
    x, y = batch
    review = ReviewKD("auto", "auto")
    assert (review.weight, review.warmup_epochs, review.max_mid_channels) == (1.0, 20, 512)
    distiller = keras_unikd.Distiller(
        teacher, student, terms=[terms.CrossEntropy(), review], steps_per_epoch=4
    )
    # Every stage end and the pooled vector, on both sides.
    assert review.teacher_features == ("t_stage1", "t_stage2", "t_stage3", "t_pool")
    assert review.student_features == ("s_stage1", "s_stage2", "s_stage3", "s_pool")
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    before = weights_of(student.get_layer("s_conv1"))[0]
    blocks_before = weights_of(review.blocks[0])
    losses = [distiller.train_on_batch(x, y, return_dict=True)["reviewkd_loss"] for _ in range(2)]
    assert np.all(np.isfinite(losses)) and losses[0] > 0
    assert not np.allclose(before, weights_of(student.get_layer("s_conv1"))[0])
    # The blocks train too, and their batch norms track the batch statistics.
    for a, b in zip(blocks_before, weights_of(review.blocks[0])):
        assert not np.allclose(a, b)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(review))
    assert isinstance(restored, ReviewKD) and restored.get_config() == review.get_config()
    path = os.path.join(tmp_path, "reviewkd.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.terms[1].get_config() == review.get_config()
    for a, b in zip(weights_of(review), weights_of(loaded.terms[1])):
        np.testing.assert_array_equal(a, b)


def test_auto_pairs_the_deepest_stages_with_a_named_side():
    student = AutoTaps(stages=("s_stage1", "s_stage2", "s_stage3"), pooled="s_pool")
    named = ReviewKD(["t_stage3", "t_pool"], "auto")
    named.choose_auto_features(None, student)
    assert named.student_features == ("s_stage3", "s_pool")
    both = ReviewKD("auto", "auto")
    both.choose_auto_features(AutoTaps(stages=("t_a", "t_b"), pooled="t_pool"), student)
    assert both.teacher_features == ("t_a", "t_b", "t_pool")
    assert both.student_features == ("s_stage2", "s_stage3", "s_pool")


def test_teacher_needs_the_whole_maps():
    needs = ReviewKD(TEACHER, STUDENT).teacher_needs()
    assert needs.feature_maps == tuple(TEACHER) and not needs.cacheable
    assert "'reviewkd' (ReviewKD)" in needs.reason and not needs.logits
    assert not ReviewKD("auto", STUDENT).teacher_needs().cacheable


# --- errors -------------------------------------------------------------------------


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="give as many teacher_features as student_features"):
        ReviewKD(["t_stage1", "t_pool"], ["s_pool"])
    with pytest.raises(ValueError, match="max_mid_channels must be a positive integer"):
        ReviewKD(TEACHER, STUDENT, max_mid_channels=0)
    # A named side with more stages than the other network's automatic taps hold.
    with pytest.raises(ValueError, match="give as many teacher_features"):
        ReviewKD(TEACHER, "auto").choose_auto_features(
            None, AutoTaps(stages=("s_stage3",), pooled="s_pool")
        )
    # Without a pooled vector on one side, both read their deepest stage ends only.
    stages_only = ReviewKD("auto", "auto")
    stages_only.choose_auto_features(
        AutoTaps(stages=("t_a", "t_b")), AutoTaps(stages=("s_a", "s_b", "s_c"), pooled="s_pool")
    )
    assert (stages_only.teacher_features, stages_only.student_features) == (
        ("t_a", "t_b"), ("s_b", "s_c"),
    )
    term = ReviewKD(["t_stage1", "t_tokens"], ["s_stage1", "s_pool"])
    shapes = ForwardShapes(
        teacher={"t_stage1": (None, 8, 8, 4), "t_tokens": (None, 16, 4)},
        student={"s_stage1": (None, 8, 8, 2), "s_pool": (None, 8)},
        num_classes=5,
    )
    with pytest.raises(ValueError, match=r"layer 't_tokens' outputs shape \(None, 16, 4\)"):
        term.build(shapes)
    with pytest.raises(ValueError, match="pass residual="):
        FusionBlock(output_channels=2, mid_channels=4)(np.ones((1, 2, 2, 3), "float32"))
