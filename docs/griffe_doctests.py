"""Griffe extension for the API reference: doctests as code blocks.

keras_unikd's docstrings write their examples as an `Example:` paragraph
followed by doctest lines (`>>> ...`, `... ...` and the expected output,
up to a blank line), which `make test` runs with `--doctest-modules`.
Markdown has no syntax for such lines: it would render them as nested
quotes. This extension wraps each doctest run in a ```` ```pycon ```` fence
when griffe loads a docstring; the docstrings themselves are unchanged.
"""

import griffe


def fence_doctests(text):
    """Returns `text` with every run of doctest lines inside a pycon fence."""
    lines = text.split("\n")
    out = []
    in_fence = False
    in_doctest = False
    indent = ""
    for line in lines:
        stripped = line.lstrip()
        if in_doctest:
            if stripped:
                out.append(line)
                continue
            out.append(f"{indent}```")
            in_doctest = False
        if stripped.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (stripped.startswith(">>> ") or stripped == ">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            in_doctest = True
        out.append(line)
    if in_doctest:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fences the doctests of every docstring griffe loads."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
