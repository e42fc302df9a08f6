"""Lazy package attributes (PEP 562): a name's module is imported on first use.

`keras_unikd`, `keras_unikd.terms` and `keras_unikd.presets` load their names
this way, so that importing them (and the command line, whose `--help` and
`list-presets` need no Keras) does not import Keras and TensorFlow.
"""

import importlib


def lazy_attributes(package, names):
    """`(__getattr__, __dir__)` for a package whose attributes live in other modules.

    Args:
        package: The package's `__name__`.
        names: `{attribute: module name}`; an attribute named like the
            module's last component (`"terms": "keras_unikd.terms"`) is the
            module itself, any other is that module's attribute of the name.

    Example:

    >>> getattr_, dir_ = lazy_attributes("demo", {"sqrt": "math", "json": "json"})
    >>> getattr_("sqrt")(4.0), getattr_("json").__name__
    (2.0, 'json')
    >>> getattr_("missing")
    Traceback (most recent call last):
    ...
    AttributeError: module 'demo' has no attribute 'missing'
    """

    def __getattr__(name):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(names[name])
        if names[name].rsplit(".", 1)[-1] == name:
            return module
        return getattr(module, name)

    def __dir__():
        return sorted(names)

    return __getattr__, __dir__
