"""`keras-unikd list-presets`: the registered experiments, one line each (or JSON)."""

import json

from keras_unikd.methods import METHODS


def add_parser(commands):
    parser = commands.add_parser("list-presets", help="list the experiments")
    parser.add_argument("--json", action="store_true", help="print every field as JSON")
    parser.set_defaults(run=run)
    return parser


def run(args):
    from keras_unikd import presets

    if args.json:
        records = [presets.get_preset(n).to_dict() for n in presets.list_presets()]
        print(json.dumps(records, indent=2))
        return 0
    header = (
        f"{'preset':41s} {'teacher':>19s} -> {'student':19s} "
        f"{'method':>7s} {'views':>5s} {'epochs':>6s} {'lr':>6s} {'beta':>4s}"
    )
    print(header)
    print("-" * len(header))
    for name in presets.list_presets():
        p = presets.get_preset(name)
        beta = METHODS["dkd"].resolve(**p.settings("dkd"))["dkd_beta"]
        print(
            f"{p.name:41s} {p.teacher:>19s} -> {p.student:19s} {p.method or 'any':>7s} "
            f"{2 if p.two_views else 1:5d} {p.recipe.epochs:6d} "
            f"{p.recipe.learning_rate:6g} {beta:4g}"
        )
    return 0
