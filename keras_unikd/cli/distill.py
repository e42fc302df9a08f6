"""`keras-unikd distill`: a preset's student, with a method of the method table.

`--method` is one of `keras_unikd.methods.METHODS`; without it, the preset's
own method (`Preset.method`, e.g. `unimlkd` for
`cifar100_resnet32x4_resnet8x4_unimlkd`), else `unikd`.
`--logit-standardization` runs the method's `+ls` variant. The two-view
methods (`mlkd`, `unimlkd`) train on `((weak, strong), labels)` batches
(`cifar100_datasets(two_views=True)`); validation stays single view. The run
writes `<output-dir>/<method>/` (`<method>+ls/` with
`--logit-standardization`).

`--teacher-cache DIR` trains from a cache that `cache-teacher` wrote: the
keyed views of the same `--seed` (default 0, as `cache-teacher`'s) with the
teacher's outputs read from `DIR` instead of computed, by a Distiller that
has no teacher model (`TeacherCache.teacher_source()`). The cache is checked
against the data, seed, method and epochs first (and against the teacher's
weights when `--teacher` is given). Such a run backs up with
`keras_unikd.callbacks.StepBackup` (every 10 minutes and at epoch ends, in
`backup/`): run the same command again after a crash and it continues at the
next batch.
"""

import os

from keras_unikd.cli import common
from keras_unikd.cli.fit import Run
from keras_unikd.cli.fit import fit_run


def add_parser(commands):
    parser = commands.add_parser(
        "distill", help="train a preset's student with a distillation method"
    )
    common.add_run_arguments(parser)
    common.add_method_arguments(parser)
    parser.add_argument(
        "--teacher",
        help="trained teacher .keras file (default: "
        f"<output-dir>/{common.TEACHER_DIR}/best_teacher.keras from train-teacher; "
        "with --teacher-cache: optional, to check the cache's teacher)",
    )
    parser.add_argument(
        "--teacher-cache",
        metavar="DIR",
        help="train from the teacher-output cache that `cache-teacher` wrote for this "
        "preset, method, --seed (default 0) and --take: the teacher's forward pass is "
        "read, not run, and the teacher model is not needed (CIFAR-100 presets)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args):
    import keras

    from keras_unikd import presets
    from keras_unikd.methods import reads_train_labels

    preset = common.get_preset(args.preset)
    method, views = common.run_method(preset, args.method, args.logit_standardization)
    batch_size = args.batch_size or preset.recipe.batch_size
    training = Run(
        preset=preset,
        name=method,
        role="student",
        run_dir=common.run_dir(args, preset, method),
        epochs=args.epochs or preset.recipe.epochs,
        batch_size=batch_size,
        steps_per_epoch=0,
        views=views,
        published=preset.published.of(method),
        info=dict(take=args.take, seed=args.seed, strategy=args.strategy),
    )
    strategy = common.strategy(args)
    _check_replicas(method, strategy)
    if args.teacher_cache:
        _check_cached_run(args, preset, method)
        teacher_path = args.teacher
    else:
        teacher_path = _teacher_path(args, preset, method, training.run_dir)
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    labels = common.train_labels(args, preset, method)
    train_ds, val_ds = common.load_datasets(
        preset, batch_size, data_dir=args.data_dir, take=args.take, seed=args.seed, views=views,
        with_example_index=reads_train_labels(method),
    )
    training.steps_per_epoch = common.steps_per_epoch(train_ds, preset, batch_size, args.take)
    fit_steps, source, backup = None, None, None
    if args.teacher_cache:
        backup = _step_backup(training)
        source, train_ds, training.steps_per_epoch = _cached_batches(
            args, preset, training, backup.latest(), labels
        )
        fit_steps = training.steps_per_epoch
    training.info.update(
        teacher_path=teacher_path,
        teacher_cache=os.path.abspath(args.teacher_cache) if args.teacher_cache else None,
    )

    def build_model():
        teacher = source
        if source is None and teacher_path is not None:
            teacher = common.load_teacher(teacher_path)
        student = presets.build_model(preset, "student")
        return presets.build_distiller(
            preset, teacher, student, method, seed=args.seed, train_labels=labels
        )

    fit_run(
        training,
        build_model,
        train_ds,
        val_ds,
        common.verbosity(args),
        strategy=strategy,
        fit_steps=fit_steps,
        backup=backup,
    )
    return 0


def _teacher_path(args, preset, method, run_dir):
    """The teacher's file (checked to exist), or `None` for a method without teacher."""
    if not common.reads_a_teacher(method):
        return None
    path = args.teacher or common.default_teacher_path(os.path.dirname(run_dir))
    common.check_teacher_file(path, args, preset)
    return path


def _check_cached_run(args, preset, method):
    if preset.dataset != "cifar100":
        raise common.CLIError(
            f"--teacher-cache trains on the keyed CIFAR-100 pipeline; the {preset.dataset} "
            "pipeline is not keyed, so its teacher runs online. Drop --teacher-cache."
        )
    if not common.reads_a_teacher(method):
        raise common.CLIError(
            f"--method {method} trains the student alone and reads no teacher: drop "
            "--teacher-cache."
        )
    if args.teacher:
        common.check_teacher_file(args.teacher, args, preset)


def _check_replicas(method, strategy):
    """CRD's memory banks cannot be shared by several `tf.distribute` replicas."""
    from keras_unikd.methods import reads_train_labels

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if replicas > 1 and reads_train_labels(method):
        raise common.CLIError(
            f"--method {method} keeps a memory row per training example, which the "
            f"{replicas} replicas of --strategy mirrored cannot share: drop --strategy "
            "(or run under --backend jax, whose data parallelism trains it as one device)."
        )


def _step_backup(training):
    """The `StepBackup` of a cached run's `backup/`: it resumes at the next batch."""
    from keras_unikd.callbacks import StepBackup

    if os.path.exists(os.path.join(training.backup_dir, "training_metadata.json")):
        raise common.CLIError(
            f"{training.backup_dir} holds an epoch-level backup of an older keras-unikd "
            "(keras.callbacks.BackupAndRestore); runs from a teacher cache now back up "
            "at any step. Delete that folder to start the run over, or finish the run "
            "with the older version."
        )
    return StepBackup(training.backup_dir, save_every_minutes=10, delete_on_finish=False)


def _cached_batches(args, preset, training, position, train_labels=None):
    """`(teacher source, training batches, steps per epoch)` of a cached run.

    The cache is opened (and checked) for this run's terms, data, seed and
    epochs; the keyed batches carry each example's index for a method that
    reads `train_labels`. `Distiller.fit` starts them at the batch of the
    last backup (`position`, a `BackupPosition` or `None`, is only printed).
    """
    from keras_unikd import presets
    from keras_unikd.cache import cached_teacher_pipeline
    from keras_unikd.cache import open_teacher_cache
    from keras_unikd.data.cifar100 import cifar100_keyed_augmentation
    from keras_unikd.data.cifar100 import cifar100_train_arrays
    from keras_unikd.data.keyed import keyed_steps_per_epoch

    images, labels = cifar100_train_arrays(data_dir=args.data_dir, take=args.take)
    seed = 0 if args.seed is None else args.seed
    teacher = common.load_teacher(args.teacher) if args.teacher else None
    try:
        cache = open_teacher_cache(
            args.teacher_cache,
            teacher,
            presets.build_terms(preset, training.name, train_labels=train_labels),
            images,
            labels,
            seed,
            training.epochs,
            cifar100_keyed_augmentation(),
            two_views=training.views == 2,
        )
    except ValueError as error:
        raise common.CLIError(f"--teacher-cache: {error}") from None
    resuming = f", resuming at epoch {position.epoch}" if position else ""
    if position and position.batch:
        resuming += f" after batch {position.batch}"
    print(
        f"keras-unikd: the teacher's outputs come from the cache at "
        f"{os.path.abspath(args.teacher_cache)} (keyed seed {seed}{resuming})",
        flush=True,
    )
    batches = cached_teacher_pipeline(
        cache, images, labels, training.batch_size,
        with_example_index=train_labels is not None,
    )
    steps = keyed_steps_per_epoch(len(images), training.batch_size)
    return cache.teacher_source(), batches, steps
