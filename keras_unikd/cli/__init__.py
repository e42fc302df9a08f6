"""`keras-unikd`: one command per experiment of the UniKD paper.

```
keras-unikd list-presets
keras-unikd train-teacher --preset cifar100_resnet32x4_resnet8x4
keras-unikd distill --preset cifar100_resnet32x4_resnet8x4 --method unikd
keras-unikd distill --preset cifar100_resnet32x4_resnet8x4_mlkd --logit-standardization
keras-unikd cache-teacher --preset cifar100_resnet32x4_resnet8x4 \\
    --teacher runs/cifar100_resnet32x4_resnet8x4/teacher/best_teacher.keras --cache-dir cache/r32x4
```

One module per command (`list_presets`, `train_teacher`, `distill`,
`cache_teacher`), each with `add_parser(commands)` and `run(args)`; they
share `common` (arguments, presets, methods, teacher, data) and `fit` (the
run folder, its callbacks and `results.json`). Every run writes into its own
folder under `--output-dir` (default `runs/<preset>`): `teacher/` for
`train-teacher`, `<method>/` for `distill`.

An expected failure (an unknown preset, a missing teacher, data that is not
prepared and cannot be downloaded) prints one `keras-unikd: error: ...`
message, with the fix, and no traceback; the exit status is 2.

The Keras backend is chosen with `--backend` (or `KERAS_BACKEND`). Keras
reads it once, when it is first imported: when Keras is already loaded with
another backend the command re-runs itself in a fresh Python process with
`KERAS_BACKEND` set. `--help` and `list-presets` do not import Keras.
"""

import argparse
import os
import subprocess
import sys

from keras_unikd.cli import cache_teacher
from keras_unikd.cli import distill
from keras_unikd.cli import list_presets
from keras_unikd.cli import train_teacher
from keras_unikd.cli.common import CLIError
from keras_unikd.cli.common import default_teacher_path
from keras_unikd.cli.common import load_datasets
from keras_unikd.cli.common import ls_methods
from keras_unikd.cli.common import run_method

COMMANDS = (list_presets, train_teacher, distill, cache_teacher)

__all__ = [
    "CLIError",
    "build_parser",
    "default_teacher_path",
    "load_datasets",
    "ls_methods",
    "main",
    "run_method",
]


def build_parser():
    """The argument parser of `keras-unikd`.

    Returns:
        An `argparse.ArgumentParser` with the sub-commands `list-presets`,
        `train-teacher`, `distill` and `cache-teacher`.
    """
    parser = argparse.ArgumentParser(
        prog="keras-unikd",
        description="Reproduce the UniKD (ECCV 2024) experiments with Keras 3.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def _loaded_backend():
    if "keras" not in sys.modules:
        return None
    return sys.modules["keras"].backend.backend()


def _relaunch(argv, backend):
    """Runs the same command in a fresh interpreter under `backend`."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    print(
        f"keras-unikd: Keras is already loaded with the {_loaded_backend()!r} "
        f"backend; re-running under KERAS_BACKEND={backend}.",
        file=sys.stderr,
        flush=True,
    )
    return subprocess.call([sys.executable, "-m", "keras_unikd", *argv], env=env)


def _expected_errors():
    """The errors that mean the user has something to fix: one message each."""
    from keras_unikd.data.augment import DatasetUnavailableError

    return (CLIError, DatasetUnavailableError)


def main(argv=None):
    """Runs `keras-unikd` with `argv` (default: `sys.argv[1:]`).

    Args:
        argv: The command-line arguments, without the program name.

    Returns:
        The exit status: 0 on success, 2 for what the user must fix (unknown
        preset, missing teacher, data not prepared, unsupported strategy),
        printed to stderr as `keras-unikd: error: ...` without a traceback.

    Example:

    ```python
    from keras_unikd import cli

    cli.main(["distill", "--preset", "cifar100_resnet32x4_resnet8x4",
              "--method", "dkd", "--epochs", "1", "--take", "256"])
    ```
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    backend = getattr(args, "backend", None)
    if backend is not None:
        loaded = _loaded_backend()
        if loaded is None:
            os.environ["KERAS_BACKEND"] = backend
        elif loaded != backend:
            return _relaunch(argv, backend)
    try:
        return args.run(args)
    except _expected_errors() as error:
        print(f"keras-unikd: error: {error}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
