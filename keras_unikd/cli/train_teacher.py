"""`keras-unikd train-teacher`: a preset's teacher, from scratch, with its recipe."""

from keras_unikd.cli import common
from keras_unikd.cli.fit import Run
from keras_unikd.cli.fit import fit_run


def add_parser(commands):
    parser = commands.add_parser(
        "train-teacher", help="train a preset's teacher from scratch with its recipe"
    )
    common.add_run_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def run(args):
    import keras

    from keras_unikd import presets

    preset = common.get_preset(args.preset)
    recipe = preset.teacher_recipe
    batch_size = args.batch_size or recipe.batch_size
    strategy = common.strategy(args)
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    train_ds, val_ds = common.load_datasets(
        preset, batch_size, data_dir=args.data_dir, take=args.take, seed=args.seed
    )
    training = Run(
        preset=preset,
        name="teacher",
        role="teacher",
        run_dir=common.run_dir(args, preset, common.TEACHER_DIR),
        epochs=args.epochs or recipe.epochs,
        batch_size=batch_size,
        steps_per_epoch=common.steps_per_epoch(train_ds, preset, batch_size, args.take),
        published=preset.published.teacher,
        info=dict(take=args.take, seed=args.seed, strategy=args.strategy, teacher_path=None),
    )
    fit_run(
        training,
        lambda: presets.build_model(preset, "teacher"),
        train_ds,
        val_ds,
        common.verbosity(args),
        strategy=strategy,
    )
    return 0
