"""The ``sknet`` command line: parses arguments and delegates to the task modules."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence


class UserError(Exception):
    """An error the user can fix; printed as one line without a traceback."""


def _profile(args: argparse.Namespace) -> int:
    from sknet.profile import format_derivations, format_table, report

    rows = report(args.rows)
    if not rows:
        raise UserError(f"no paper row matches {args.rows!r}; run `sknet profile` to list them")
    print(format_table(rows))
    notes = format_derivations(rows)
    if notes:
        print("\nDocumented gaps (ours vs the paper's printed figure):\n" + notes)
    off = [item.row.label for item in rows if not item.ok]
    if args.check and off:
        print(f"\nsknet profile --check: {len(off)} row(s) off: {', '.join(off)}", file=sys.stderr)
        return 1
    if args.check:
        print(f"\nsknet profile --check: all {len(rows)} rows match the paper or its derivation")
    return 0


def _models(args: argparse.Namespace) -> int:
    from sknet.models import list_models

    print("\n".join(list_models(args.pattern)))
    return 0


def _train(args: argparse.Namespace) -> int:
    from sknet.train import format_command, train

    settings = {
        key: value
        for key, value in vars(args).items()
        if key not in ("debug", "command", "func", "config", "resume", "argv")
    }
    command = format_command(args.argv)
    train(config_file=args.config, resume=args.resume, command=command, **settings)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from sknet.train import evaluate

    report = evaluate(
        args.weights, args.data, args.sizes,
        batch_size=args.batch_size, device=args.device, workers=args.workers,
    )
    for size, metrics in report["results"].items():
        skipped = f", {metrics['skipped']} unreadable skipped" if metrics["skipped"] else ""
        print(
            f"{report['model']} on {report['data']} at {size}x{size}: top-1 err "
            f"{metrics['top1_err']:.2f}%, top-5 err {metrics['top5_err']:.2f}% "
            f"({metrics['images']} images{skipped})"
        )
    if args.json:
        from sknet.atomic import write_json

        write_json(args.json, report)
    return 0


def _analyze(args: argparse.Namespace) -> int:
    import time

    from sknet.analysis import FILES, analyze, format_findings
    from sknet.train import format_command

    started = time.perf_counter()
    report = analyze(
        args.checkpoint, args.data, args.out, scales=args.scales, unit=args.unit,
        units=args.units, samples=args.samples, limit=args.limit, batch_size=args.batch_size,
        workers=args.workers, device=args.device, channel_group=args.channel_group,
        command=format_command(args.argv),
    )
    print(format_findings(report))
    print(f"wrote {', '.join(FILES)} to {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


def _export(args: argparse.Namespace) -> int:
    from sknet.export import export_checkpoint

    try:
        done = export_checkpoint(
            args.checkpoint, args.out, input_size=args.input_size, fold=not args.keep_bn,
            opset=args.opset,
        )
    except ModuleNotFoundError as error:  # onnx or onnxscript missing: the message says what
        raise UserError(str(error)) from None
    mode = "eval mode, BatchNorm kept" if args.keep_bn else "deploy mode, BatchNorm folded"
    shape = "x".join(str(item) for item in done["input_shape"])
    print(
        f"wrote {done['out']}: {done['model']} from {done['weights']}, {mode}, input {shape} "
        f"(dynamic batch N), opset {done['opset']}"
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from sknet.predict import format_prediction, predict

    for prediction in predict(args.checkpoint, args.images, top=args.top, device=args.device):
        print(format_prediction(prediction))
    return 0


def _mapping(text: str) -> dict:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping like '{{attention: 0}}': {text!r}")
    return value


def _numbers(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.replace(",", " ").split()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {kind.__name__}s separated by commas, got {text!r}"
            ) from None

    return parse


FLAG = {"action": "store_true"}
TRAIN_OPTIONS: list[tuple[str, dict]] = [
    ("--data", {"help": "digits (default), ImageNet-layout folder, cifar10:PATH, "
                        "cifar100:PATH, synthetic[:N] (generated, for speed runs)"}),
    ("--model", {"help": "registered model (default: sknet_digits on digits, sknet50 on folders)"}),
    ("--model-kwargs", {"type": _mapping, "metavar": "YAML", "help": "e.g. '{attention: false}'"}),
    ("--out", {"help": "output folder (default runs/train)"}),
    ("--resume", {"default": None, "metavar": "LAST_PT", "help": "continue the run of a last.pt"}),
    ("--config", {"default": None, "metavar": "YAML", "help": "settings file; options here win"}),
    ("--epochs", {"type": int}),
    ("--batch-size", {"type": int, "help": "global batch size, split across processes"}),
    ("--lr", {"type": float, "help": "default: the recipe's, scaled linearly with the batch"}),
    ("--momentum", {"type": float}),
    ("--weight-decay", {"type": float}),
    ("--label-smoothing", {"type": float}),
    ("--lr-milestones", {"type": _numbers(float), "metavar": "F,F,..",
                         "help": "fractions of the run after which lr is multiplied by lr-gamma"}),
    ("--lr-gamma", {"type": float}),
    ("--input-size", {"type": int, "help": "training crop size"}),
    ("--eval-sizes", {"type": _numbers(int), "metavar": "N,N,..",
                      "help": "centre-crop sizes the best weights are evaluated at"}),
    ("--min-scale", {"type": float, "help": "smallest area fraction of the random-size crop"}),
    ("--seed", {"type": int}),
    ("--device", {"help": "auto (default), cpu, cuda, cuda:N"}),
    ("--amp", {**FLAG, "help": "mixed precision (autocast)"}),
    ("--amp-dtype", {"choices": ("bf16", "fp16"), "help": "autocast dtype (default bf16)"}),
    ("--channels-last", {**FLAG, "help": "NHWC memory format"}),
    ("--compile", {**FLAG, "help": "torch.compile the model"}),
    ("--workers", {"type": int, "help": "data-loader processes per training process"}),
    ("--sync-bn", {**FLAG, "help": "SyncBatchNorm across processes (CUDA)"}),
    ("--save-every", {"type": int, "metavar": "STEPS",
                      "help": "also checkpoint every STEPS steps (default 1000; 0: epoch ends)"}),
    ("--strict", {**FLAG, "help": "decode every image up front; fail on any bad file"}),
    ("--tensorboard", {**FLAG, "help": "log to OUT/tensorboard"}),
]


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        argument_default=argparse.SUPPRESS,
        help="train a model with the paper's recipe (Section 4.1); works under torchrun",
        description="Train with the paper's recipe. Unset options take the recipe default of the "
        "dataset family (ImageNet folders, CIFAR, digits); a YAML --config supplies defaults "
        "that options override. Under `torchrun --nproc_per_node=N -m sknet train ...` it runs "
        "DistributedDataParallel with --batch-size as the global batch.",
    )
    for flag, options in TRAIN_OPTIONS:
        train.add_argument(flag, **options)
    train.set_defaults(func=_train)


def _add_eval(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="top-1/top-5 error of trained weights by centre crop",
        description="Evaluate trained weights (a training --out folder, a folder with "
        "model.safetensors + config.json, X.safetensors, or a training last.pt) on a dataset.",
    )
    add = evaluate.add_argument
    add("weights", help="training --out folder, weights folder, .safetensors file or last.pt")
    add("--data", default=None, help="dataset spec (default: the one recorded with the weights)")
    add("--sizes", type=_numbers(int), default=None, metavar="N,N,..",
        help="centre-crop sizes (default: those recorded)")
    add("--batch-size", type=int, default=256)
    add("--device", default="auto")
    add("--workers", type=int, default=None)
    add("--json", default=None, metavar="FILE", help="also write the results here")
    evaluate.set_defaults(func=_eval)


def _add_analyze(commands: argparse._SubParsersAction) -> None:
    analyze = commands.add_parser(
        "analyze",
        help="attention vs object size: the numbers and Figures 3-4 of Section 4.4",
        description="Show every validation image with its central object enlarged (a central "
        "crop of 1/s of the side resized back: --scales), record the softmax attention of every "
        "SK unit, and write per-unit, per-channel and per-class statistics (CSV, JSON) and "
        "Figures 3a, 3b, 3c and 4 (PNG) into --out.",
    )
    add = analyze.add_argument
    add("--checkpoint", required=True, metavar="PATH",
        help="training --out folder, X.safetensors, weights folder or last.pt")
    add("--data", default=None, help="dataset spec (default: the one recorded with the weights)")
    add("--out", required=True, metavar="DIR", help="folder for the CSV, JSON and PNG files")
    add("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0], metavar="S",
        help="object magnifications, each >= 1 (default 1.0 1.5 2.0); Fig. 4 uses the first two")
    add("--unit", default=None, metavar="SK_s_b",
        help="unit of the per-channel panel (default: last unit of the second SK stage, "
        "SK_3_4 for SKNet-50)")
    add("--units", nargs="+", default=None, metavar="SK_s_b",
        help="units of Fig. 4 (default: last unit of the first, second and last SK stage)")
    add("--samples", type=int, nargs=2, default=None, metavar=("I", "J"),
        help="validation-set indices of the images of Fig. 3a and 3b (default: drawn, seed 0)")
    add("--limit", type=int, default=None, metavar="N",
        help="analyse N images evenly spaced over the validation set (default: all)")
    add("--batch-size", type=int, default=128)
    add("--workers", type=int, default=None, help="data-loader processes")
    add("--device", default="auto")
    add("--channel-group", type=int, default=None, metavar="N",
        help="channels averaged per point of the per-channel panel (default: the paper's 16, "
        "fewer for units under 256 channels)")
    analyze.set_defaults(func=_analyze)


def _add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="write trained weights as an ONNX graph (deploy mode, dynamic batch)",
        description="Export trained weights to ONNX with torch's torch.export-based exporter "
        "(needs onnx and onnxscript: pip install 'sknet[onnx]'). The graph takes input "
        "[N, C, S, S] (N free, S the checkpoint's input size) and outputs logits [N, classes]; "
        "BatchNorm is folded into the convolutions unless --keep-bn.",
    )
    add = export.add_argument
    add("--checkpoint", required=True, metavar="PATH",
        help="training --out folder, weights folder, X.safetensors or last.pt")
    add("--format", default="onnx", choices=("onnx",), help="output format (default onnx)")
    add("--out", required=True, metavar="FILE", help="the file to write, e.g. model.onnx")
    add("--input-size", type=int, default=None, metavar="S",
        help="input height = width (default: the checkpoint's preprocessing input_size)")
    add("--keep-bn", action="store_true",
        help="export the eval-mode model with BatchNorm nodes instead of folding them")
    add("--opset", type=int, default=None, help="ONNX opset (default: the exporter's own)")
    export.set_defaults(func=_export)


def _add_predict(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="top classes and probabilities of images",
        description="Classify image files with trained weights, preprocessed as their config "
        "says (resize, centre crop, mean/std, grey for one-channel models), and print the top "
        "classes with their probabilities for each image.",
    )
    add = predict.add_argument
    add("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    add("--checkpoint", required=True, metavar="PATH",
        help="training --out folder, weights folder or X.safetensors")
    add("--top", type=int, default=5, metavar="K", help="classes shown per image (default 5)")
    add("--device", default="auto")
    predict.set_defaults(func=_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sknet",
        description="Selective Kernel Networks: models, profiling, training, analysis."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    profile = commands.add_parser(
        "profile", help="parameters and multiply-adds of every paper row, beside the paper's"
    )
    profile.add_argument(
        "--check", action="store_true",
        help="exit 1 if a row misses the paper's printed precision without a documented derivation",
    )
    profile.add_argument("--rows", default="", help="only rows whose label contains this text")
    profile.set_defaults(func=_profile)

    models = commands.add_parser("models", help="list registered model names")
    models.add_argument("pattern", nargs="?", default="", help="only names containing this text")
    models.set_defaults(func=_models)

    _add_train(commands)
    _add_eval(commands)
    _add_analyze(commands)
    _add_export(commands)
    _add_predict(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError, KeyboardInterrupt) as error:
        if args.debug:
            traceback.print_exc()
        message = "interrupted" if isinstance(error, KeyboardInterrupt) else str(error)
        print(f"sknet {args.command}: error: {message}", file=sys.stderr)
        return 130 if isinstance(error, KeyboardInterrupt) else 2
