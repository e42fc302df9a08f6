"""Token features as maps: `(batch, tokens, channels)` -> `(batch, h, w, channels)`.

Transformers (ViT, DeiT, text encoders) output tokens, not maps. A tap turns
each rank-3 feature into a channels-last map by one rule, so that every term
(UniKD's aggregators and heads, FitNet's regressor, a term of your own) sees
maps:

- a model whose input is an image (one rank-4 input of known `H x W`)
  arranges its tokens on a patch grid after a few *prefix* tokens (class,
  distillation, register tokens). With `L` tokens, the rule takes the
  smallest prefix count `p` in `0..MAX_PREFIX_TOKENS` for which `L - p`
  tokens fill an `h x w` grid with `h / w = H / W`; the prefix tokens are
  set aside and the grid becomes an `(h, w)` map. ViT's 65 tokens on a
  32x32 input with 4x4 patches: 1 prefix token, an 8x8 grid.
- any other model (text, token ids, vectors) gives a sequence: the `L`
  tokens become an `(L, 1)` map.

Overrides, per layer path (`token_layouts` of `FeatureTap`;
`teacher_token_layouts` / `student_token_layouts` of the `Distiller`):
`"grid"` (the grid rule, square when the input is not an image),
`"sequence"` (all tokens as an `(L, 1)` map), or an explicit
`(prefix_tokens, height, width)` with `prefix_tokens + height * width = L`.
"""

import dataclasses
import math

from keras import ops

MAX_PREFIX_TOKENS = 8
GRID = "grid"
SEQUENCE = "sequence"
LAYOUT_FORMS = (GRID, SEQUENCE)


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """How a `(batch, tokens, channels)` feature is read as a map.

    Attributes:
        prefix_tokens: Leading tokens set aside (class, distillation,
            register tokens).
        height: Rows of the map.
        width: Columns of the map (1 for a sequence).
    """

    prefix_tokens: int
    height: int
    width: int

    def map_shape(self, shape):
        """The map shape `(batch, height, width, channels)` of a token shape."""
        return (shape[0], self.height, self.width, shape[-1])

    def to_map(self, tokens):
        """The map of a `(batch, tokens, channels)` tensor: a slice and a reshape."""
        if self.prefix_tokens:
            tokens = tokens[:, self.prefix_tokens :, :]
        return ops.reshape(tokens, (-1, self.height, self.width, tokens.shape[-1]))

    def config(self):
        """The explicit override `[prefix_tokens, height, width]` of this layout."""
        return [self.prefix_tokens, self.height, self.width]

    def describe(self, shape):
        """A readable line: what is set aside, the grid, the map shape."""
        plural = "" if self.prefix_tokens == 1 else "s"
        prefix = (
            f"{self.prefix_tokens} prefix token{plural} set aside, " if self.prefix_tokens else ""
        )
        grid = (
            f"sequence of {self.height} tokens"
            if self.width == 1
            else f"{self.height}x{self.width} grid"
        )
        return f"{prefix}{grid} -> {self.map_shape(tuple(shape))}"


def image_size(model):
    """`(H, W)` of a model whose single input is a rank-4 image, else `None`."""
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        return None
    height, width = model.inputs[0].shape[1:3]
    if height is None or width is None:
        return None
    return (height, width)


def check_token_layouts(value, argument="token_layouts"):
    """`{layer path: "grid" | "sequence" | (prefix_tokens, height, width)}`, checked.

    Args:
        value: `None` or a dict from layer paths to layouts; explicit layouts
            may be lists (as JSON configs give them back).
        argument: The argument's name, for the message.

    Returns:
        A dict (empty for `None`) whose explicit layouts are `TokenLayout`s.

    Raises:
        ValueError: for anything else.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            f"{argument} must be a dict {{layer path: layout}}; got {value!r}."
        )
    layouts = {}
    for path, layout in value.items():
        if not isinstance(path, str) or not path:
            raise ValueError(f"{argument} keys must be layer paths (strings); got {path!r}.")
        if isinstance(layout, str) and layout in LAYOUT_FORMS:
            layouts[path] = layout
            continue
        parts = tuple(layout) if isinstance(layout, (list, tuple)) else ()
        if (
            len(parts) != 3
            or any(isinstance(part, bool) or not isinstance(part, int) for part in parts)
            or parts[0] < 0
            or min(parts[1:]) < 1
        ):
            raise ValueError(
                f"{argument}[{path!r}] must be 'grid', 'sequence' or "
                "(prefix_tokens, height, width) with prefix_tokens >= 0 and "
                f"height, width >= 1; got {layout!r}."
            )
        layouts[path] = TokenLayout(*parts)
    return layouts


def _grid(tokens, size):
    """The smallest-prefix grid of `tokens` with `size`'s aspect ratio, or `None`."""
    divisor = math.gcd(*size)
    rows, columns = size[0] // divisor, size[1] // divisor
    for prefix in range(min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
        cells, remainder = divmod(tokens - prefix, rows * columns)
        scale = math.isqrt(cells)
        if not remainder and scale * scale == cells:
            return TokenLayout(prefix, scale * rows, scale * columns)
    return None


def token_layout(path, shape, size, override=None):
    """The layout of the token feature `path` of shape `(batch, L, C)`.

    Args:
        path: The layer path, for messages.
        shape: The feature's shape, rank 3.
        size: The model's image size `(H, W)` (`image_size`), or `None`.
        override: `None` (the rule), `"grid"`, `"sequence"` or a `TokenLayout`.

    Returns:
        A `TokenLayout`, or `None` when the grid rule finds no grid.

    Raises:
        ValueError: for an unknown token count or an explicit layout that
            does not cover the `L` tokens.
    """
    tokens = shape[1]
    if tokens is None:
        raise ValueError(
            f"Layer {path!r} outputs tokens of shape {tuple(shape)} whose number "
            "is unknown, so they cannot be read as a map. Give the model a "
            "fixed input length (e.g. keras.Input((length,)))."
        )
    if isinstance(override, TokenLayout):
        if override.prefix_tokens + override.height * override.width != tokens:
            raise ValueError(
                f"The token layout {tuple(override.config())} of layer {path!r} "
                f"covers {override.prefix_tokens} + {override.height} x "
                f"{override.width} tokens, but the layer outputs {tokens} "
                f"(shape {tuple(shape)}). Give (prefix_tokens, height, width) "
                f"with prefix_tokens + height * width = {tokens}."
            )
        return override
    if override == SEQUENCE or (override is None and size is None):
        return TokenLayout(0, tokens, 1)
    return _grid(tokens, size or (1, 1))


def no_grid_message(path, shape, size):
    """The error for a token feature that fits no grid: the shape and the fix."""
    ratio = f"{size[0]}x{size[1]} input" if size else "square grid"
    return (
        f"Layer {path!r} outputs tokens of shape {tuple(shape)}: {shape[1]} "
        f"tokens fit no grid of the {ratio} after 0 to {MAX_PREFIX_TOKENS} "
        "prefix tokens. Say how to read them: token_layouts={"
        f"{path!r}: 'sequence'}} (all tokens as a ({shape[1]}, 1) map) or "
        f"{{{path!r}: (prefix_tokens, height, width)}}, given to FeatureTap "
        "or as the Distiller's teacher_token_layouts / student_token_layouts."
    )
