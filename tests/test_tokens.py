import numpy as np
import pytest
from keras import ops

from keras_unikd.tokens import MAX_PREFIX_TOKENS
from keras_unikd.tokens import TokenLayout
from keras_unikd.tokens import check_token_layouts
from keras_unikd.tokens import no_grid_message
from keras_unikd.tokens import token_layout


@pytest.mark.parametrize(
    "tokens,size,expected",
    [
        (65, (32, 32), (1, 8, 8)),  # ViT: class token + 8x8 patches
        (64, (32, 32), (0, 8, 8)),  # mean-pooled ViT: no prefix
        (198, (224, 224), (2, 14, 14)),  # DeiT: class + distillation tokens
        (201, (224, 224), (5, 14, 14)),  # class token + 4 registers
        (33, (16, 32), (1, 4, 8)),  # a 1:2 image
        (1 + MAX_PREFIX_TOKENS + 64, (32, 32), None),  # more prefix tokens than the rule tries
        (90, (32, 32), None),  # 81 = 9x9 would need 9 prefix tokens
        (10, None, (0, 10, 1)),  # not an image: a sequence
    ],
)
def test_the_rule(tokens, size, expected):
    layout = token_layout("x", (None, tokens, 4), size)
    assert (layout and tuple(layout.config())) == expected


def test_overrides():
    shape = (None, 65, 4)
    assert token_layout("x", shape, (32, 32), "sequence") == TokenLayout(0, 65, 1)
    assert token_layout("x", (None, 17, 4), None, "grid") == TokenLayout(1, 4, 4)
    assert token_layout("x", shape, (32, 32), TokenLayout(5, 6, 10)) == TokenLayout(5, 6, 10)
    with pytest.raises(ValueError, match=r"covers 1 \+ 8 x 7 tokens, but the layer outputs 65"):
        token_layout("x", shape, (32, 32), TokenLayout(1, 8, 7))
    with pytest.raises(ValueError, match="number is unknown.*fixed input length"):
        token_layout("x", (None, None, 4), None)


def test_check_token_layouts():
    layouts = check_token_layouts({"a": "grid", "b": "sequence", "c": [1, 8, 8]})
    assert layouts == {"a": "grid", "b": "sequence", "c": TokenLayout(1, 8, 8)}
    assert check_token_layouts(None) == {}
    for bad in ({"a": "square"}, {"a": (1, 8)}, {"a": (-1, 8, 8)}, {"a": (0, 0, 8)}, ["a"]):
        with pytest.raises(ValueError, match="token_layouts"):
            check_token_layouts(bad)


def test_a_layout_is_a_slice_and_a_reshape():
    tokens = np.random.default_rng(0).random((2, 17, 3), dtype=np.float32)
    maps = ops.convert_to_numpy(TokenLayout(1, 4, 4).to_map(tokens))
    np.testing.assert_array_equal(maps, tokens[:, 1:].reshape(2, 4, 4, 3))
    sequence = ops.convert_to_numpy(TokenLayout(0, 17, 1).to_map(tokens))
    np.testing.assert_array_equal(sequence, tokens[:, :, None, :])


def test_descriptions_and_the_error_message():
    assert (
        TokenLayout(1, 8, 8).describe((None, 65, 64))
        == "1 prefix token set aside, 8x8 grid -> (None, 8, 8, 64)"
    )
    sequence = TokenLayout(0, 10, 1).describe((None, 10, 8))
    assert sequence == "sequence of 10 tokens -> (None, 10, 1, 8)"
    message = no_grid_message("vit/block", (None, 90, 8), (32, 32))
    assert "'vit/block'" in message and "(None, 90, 8)" in message
    assert "token_layouts={'vit/block': 'sequence'}" in message
