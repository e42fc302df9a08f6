"""`keras-unikd cache-teacher`: the teacher's outputs on every keyed view, on disk.

Writes a teacher-output cache (`keras_unikd.cache`) for the terms that
`distill` would build for the preset and method: the teacher's outputs on
every view of the keyed CIFAR-100 training pipeline
(`keras_unikd.data.cifar100_keyed_augmentation()`, seeded by `--seed`, one
view or two as the method reads) for `--epochs` epochs. A method whose terms
need the teacher online (`fitnet`, a teacher-side aggregator) is an error
that names the term. Running it again resumes an interrupted build.

With `--shard I --num-shards N`, it builds the epochs `e % N == I` alone: N
such commands (one per machine sharing `--cache-dir`, or one per device of
a machine) build one cache together (`keras_unikd.cache.shards`).
"""

import os
import time

from keras_unikd.cli import common

DTYPES = ("float32", "float16")


def add_parser(commands):
    parser = commands.add_parser(
        "cache-teacher",
        help="write the teacher's outputs on every keyed training view to disk "
        "(a teacher-output cache)",
    )
    common.add_preset_arguments(parser)
    common.add_method_arguments(parser)
    parser.add_argument("--teacher", required=True, help="trained teacher .keras file")
    parser.add_argument("--cache-dir", required=True, help="the cache's directory")
    parser.add_argument(
        "--epochs", type=int, help="number of epochs to cache (default: the recipe's)"
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default=DTYPES[0],
        help="storage of the teacher's outputs (float16: half the size)",
    )
    parser.add_argument(
        "--batch-size", type=int, help="the teacher's batch size (default: the recipe's; "
        "the cached views do not depend on it)"
    )
    parser.add_argument(
        "--seed", type=int, default=0,
        help="seed of the keyed data order and augmentation (default: 0); train "
        "from the cache with the same seed",
    )
    parser.add_argument(
        "--shard", type=int,
        help="build this shard alone, 0 .. --num-shards - 1: the epochs e with "
        "e %% num_shards == shard (rerun it to resume it)",
    )
    parser.add_argument(
        "--num-shards", type=int,
        help="the number of shards (processes or machines) building the cache together",
    )
    common.add_verbose_argument(
        parser,
        "0: silent; 1: a progress bar per epoch (default on a terminal); 2: a line per epoch",
    )
    parser.set_defaults(run=run)
    return parser


def run(args):
    from keras_unikd import presets
    from keras_unikd.cache import build_teacher_cache
    from keras_unikd.data.cifar100 import cifar100_keyed_augmentation
    from keras_unikd.data.cifar100 import cifar100_train_arrays
    from keras_unikd.terms import TeacherNeeds

    shard = _shard(args)
    preset = common.get_preset(args.preset)
    method, views = common.run_method(preset, args.method, args.logit_standardization)
    if preset.dataset != "cifar100":
        raise common.CLIError(
            f"cache-teacher caches the views of the keyed CIFAR-100 pipeline; the "
            f"{preset.dataset} pipeline is not keyed, so its teacher runs online. "
            "Use a CIFAR-100 preset, or distill without a cache."
        )
    if not common.reads_a_teacher(method):
        raise common.CLIError(
            f"--method {method} trains the student alone and reads nothing of the "
            "teacher, so there is nothing to cache. Pick a distillation method."
        )
    terms = presets.build_terms(
        preset, method, train_labels=common.train_labels(args, preset, method)
    )
    needs = TeacherNeeds.combine(term.teacher_needs() for term in terms)
    if not needs.cacheable:
        raise common.CLIError(
            f"--method {method} cannot be trained from a teacher cache: {needs.reason}. "
            "Distill it online (keras-unikd distill), or cache another method."
        )
    common.check_teacher_file(args.teacher, args, preset)
    teacher = common.load_teacher(args.teacher)
    epochs = args.epochs or preset.recipe.epochs
    images, labels = cifar100_train_arrays(data_dir=args.data_dir, take=args.take)
    print(
        f"keras-unikd: caching the teacher of {method} on {preset.name}: {epochs} "
        f"epoch(s) x {len(images)} examples x {views} view(s), {args.dtype}, "
        f"seed {args.seed}{_shard_text(shard)}; writing {args.cache_dir}",
        flush=True,
    )
    start = time.perf_counter()
    try:
        cache = build_teacher_cache(
            args.cache_dir,
            teacher,
            terms,
            images,
            labels,
            args.seed,
            epochs,
            cifar100_keyed_augmentation(),
            two_views=views == 2,
            batch_size=args.batch_size or preset.recipe.batch_size,
            dtype=args.dtype,
            shard=shard,
            verbose=common.verbosity(args),
        )
    except ValueError as error:
        raise common.CLIError(str(error)) from None
    if cache is None:
        print(
            f"keras-unikd: shard {shard[0]} of {shard[1]} of the teacher cache at "
            f"{os.path.abspath(args.cache_dir)} built in {time.perf_counter() - start:.1f} "
            f"s; still to finish: {_pending(args.cache_dir)}",
            flush=True,
        )
        return 0
    print(
        f"keras-unikd: teacher cache at {os.path.abspath(args.cache_dir)}: "
        f"{cache.disk_bytes() / 2**20:.1f} MiB on disk, built in "
        f"{time.perf_counter() - start:.1f} s",
        flush=True,
    )
    return 0


def _shard(args):
    """`(--shard, --num-shards)`, or `None` without them; checked."""
    if args.shard is None and args.num_shards is None:
        return None
    if args.shard is None or args.num_shards is None:
        raise common.CLIError(
            "--shard and --num-shards go together: --shard I --num-shards N builds "
            "shard I (0 .. N - 1) of N."
        )
    if args.num_shards < 1 or not 0 <= args.shard < args.num_shards:
        raise common.CLIError(
            f"--shard must lie in 0 .. --num-shards - 1, and --num-shards be at least 1; "
            f"got --shard {args.shard} --num-shards {args.num_shards}."
        )
    return args.shard, args.num_shards


def _shard_text(shard):
    return "" if shard is None else f", shard {shard[0]} of {shard[1]}"


def _pending(directory):
    from keras_unikd.cache import shards

    pending = shards.shard_status(directory)
    return shards.describe(pending) if pending else "none (another shard has just finished)"
