"""The ``sknet`` command line: parses arguments and delegates to the task modules.

Options that several commands share are declared once, as argparse parents: the weights
(``--checkpoint``), the dataset (``--data``), the device and the data loader. The flags of
``sknet train`` are the fields of :class:`~sknet.training.config.TrainConfig`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from sknet.analysis import analyze, format_findings
from sknet.atomic import check_writable, describe, write_json
from sknet.devices import DEVICE_HELP, THREADS_HELP, torch_threads
from sknet.errors import UserError
from sknet.evaluation import errors_text, evaluate
from sknet.export import export_checkpoint
from sknet.models import create_model, list_models, load_pretrained, model_card
from sknet.models.locate import WEIGHTS_HELP
from sknet.predict import format_prediction, predict
from sknet.profiling import format_derivations, format_table, model_table, report
from sknet.training import RunStopped, train
from sknet.training.config import options
from sknet.training.parsing import parse_size, parse_sizes

PREDICT_WEIGHTS = (
    "training --out folder, weights folder, X.safetensors or last.pt (their record holds the "
    "preprocessing)"
)


def format_command(argv: Sequence[str]) -> str:
    """The command line as a shell would take it back."""
    return shlex.join(["sknet", *argv])


# -- the commands -----------------------------------------------------------------------------


def _card(args: argparse.Namespace) -> int:
    if args.model in list_models():
        print(model_card(create_model(args.model)), end="")
    else:
        print(model_card(load_pretrained(args.model), args.model), end="")
    return 0


def _profile(args: argparse.Namespace) -> int:
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
    if args.table:
        print(model_table())
        return 0
    print("\n".join(list_models(args.pattern)))
    return 0


_NOT_SETTINGS = ("debug", "command", "func", "config", "resume", "argv")
"""Attributes of ``sknet train``'s namespace that are not training settings."""


def _train(args: argparse.Namespace) -> int:
    settings = {key: value for key, value in vars(args).items() if key not in _NOT_SETTINGS}
    try:
        train(
            config_file=args.config, resume=args.resume, command=format_command(args.argv),
            **settings,
        )
    except RunStopped as stopped:  # the run saved last.pt and said how to resume
        return stopped.status  # 143 (SIGTERM) or 130 (SIGINT), as if killed by it
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.json:
        check_writable(args.json, "--json", folder=False)
    results = evaluate(
        args.checkpoint, args.data, args.sizes,
        batch_size=args.batch_size, device=args.device, workers=args.workers,
    )
    for size, metrics in results["results"].items():
        skipped = f", {metrics['skipped']} unreadable skipped" if metrics["skipped"] else ""
        errors = errors_text(metrics["top1_err"], metrics["top5_err"], results["classes"])
        print(
            f"{results['model']} on {results['data']} at {size}x{size}: {errors} "
            f"({metrics['images']} images{skipped})"
        )
    if args.json:
        write_json(args.json, results)
    return 0


def _analyze(args: argparse.Namespace) -> int:
    check_writable(args.out, "--out", folder=True)
    started = time.perf_counter()
    findings = analyze(
        args.checkpoint, args.data, args.out, scales=args.scales, unit=args.unit,
        units=args.units, samples=args.samples, limit=args.limit, batch_size=args.batch_size,
        workers=args.workers, device=args.device, channel_group=args.channel_group,
        command=format_command(args.argv),
    )
    print(format_findings(findings))
    print(f"wrote {', '.join(findings['files'])} to {args.out} in "
          f"{time.perf_counter() - started:.1f} s")
    return 0


def _export(args: argparse.Namespace) -> int:
    check_writable(args.out, "--out", folder=False)
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
    for prediction in predict(args.checkpoint, args.images, top=args.top, device=args.device):
        print(format_prediction(prediction))
    return 0


# -- shared options ---------------------------------------------------------------------------


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: its own error message, not argparse's generic one."""
    if parse in (int, float, str):
        return parse

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    checked.__name__ = getattr(parse, "__name__", "value")
    return checked


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def _weights_options(
    required: bool = True, help: str = WEIGHTS_HELP
) -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--checkpoint", required=required, default=None, metavar="PATH",
                        help=help)
    return parent


def _data_options() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--data", default=None,
                        help="dataset spec (default: the one recorded with the weights)")
    return parent


def _threads(text: str) -> int:
    count = int(text)
    if count < 1:
        raise ValueError(f"--threads must be at least 1, got {count}")
    return count


def _device_options() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--device", default="auto", help=DEVICE_HELP)
    parent.add_argument("--threads", type=_argument_type(_threads), help=THREADS_HELP)
    return parent


def _loader_options() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--batch-size", type=int, help="images per forward pass")
    parent.add_argument("--workers", type=int, default=None,
                        help="data-loader processes (default: none for in-memory data)")
    return parent


# -- the parsers ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse's parser, failing in one line like every other error (the usage is one
    ``--help`` away); its sub-commands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        argument_default=argparse.SUPPRESS,
        help="train a model with the paper's recipe (Section 4.1); works under torchrun",
        description="Train with the paper's recipe. Unset options take the recipe default of the "
        "dataset family (ImageNet folders, CIFAR, digits); a YAML --config supplies defaults "
        "that options override. Under `torchrun --nproc_per_node=N -m sknet train ...` it runs "
        "DistributedDataParallel with --batch-size as the global batch.",
    )
    parser.add_argument("--resume", default=None, metavar="LAST_PT",
                        help="continue the run of a last.pt")
    parser.add_argument("--config", default=None, metavar="YAML",
                        help="settings file; options here win")
    for name, option in options():
        flag = "--" + name.replace("_", "-")
        if option.parse is None:
            parser.add_argument(flag, action="store_true", help=option.help)
        else:
            parser.add_argument(
                flag, type=_argument_type(option.parse), metavar=option.metavar,
                choices=option.choices, help=option.help or None,
            )
    parser.set_defaults(func=_train)


def _add_eval(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        parents=[_weights_options(required=False), _data_options(), _loader_options(),
                 _device_options()],
        help="top-1/top-5 error of trained weights by centre crop",
        description=f"Evaluate trained weights on a dataset ({WEIGHTS_HELP}).",
    )
    parser.add_argument("weights", nargs="?", default=None, metavar="WEIGHTS",
                        help="deprecated spelling of --checkpoint")
    parser.add_argument("--sizes", type=_argument_type(parse_sizes), default=None,
                        metavar="N,N,..", help="centre-crop sizes (default: those recorded)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the results here")
    parser.set_defaults(func=_eval, batch_size=256)


def _add_analyze(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "analyze",
        parents=[_weights_options(), _data_options(), _loader_options(), _device_options()],
        help="attention vs object size: the numbers and Figures 3-4 of Section 4.4",
        description="Show every validation image with its central object enlarged (a central "
        "crop of 1/s of the side resized back: --scales), record the softmax attention of every "
        "SK unit, and write per-unit, per-channel and per-class statistics (CSV, JSON) and "
        "Figures 3a, 3b, 3c and 4 (PNG) into --out.",
    )
    add = parser.add_argument
    add("--out", required=True, metavar="DIR", help="folder for the CSV, JSON and PNG files")
    add("--scales", type=float, nargs="+", default=None, metavar="S",
        help="object magnifications, each >= 1 (default 1.0 1.5 2.0); Fig. 4 uses the first two "
        "(LSK units: not taken, they are analysed at 1.0x)")
    add("--unit", default=None, metavar="SK_s_b",
        help="unit of the per-channel panel (default: last unit of the second SK stage, "
        "SK_3_4 for SKNet-50)")
    add("--units", nargs="+", default=None, metavar="SK_s_b",
        help="units of Fig. 4 (default: last unit of the first, second and last SK stage)")
    add("--samples", type=int, nargs=2, default=None, metavar=("I", "J"),
        help="validation-set indices of the images of Fig. 3a and 3b (default: drawn, seed 0)")
    add("--limit", type=int, default=None, metavar="N",
        help="analyse N images evenly spaced over the validation set (default: all)")
    add("--channel-group", type=int, default=None, metavar="N",
        help="channels averaged per point of the per-channel panel (default: the paper's 16, "
        "fewer for units under 256 channels)")
    parser.set_defaults(func=_analyze, batch_size=128)


def _add_export(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        parents=[_weights_options()],
        help="write trained weights as an ONNX graph (deploy mode, dynamic batch)",
        description="Export trained weights to ONNX with torch's torch.export-based exporter "
        "(needs onnx and onnxscript: pip install 'sknet[onnx]'). The graph takes input "
        "[N, C, S, S] (N free, S the checkpoint's input size) and outputs logits [N, classes]; "
        "BatchNorm is folded into the convolutions unless --keep-bn.",
    )
    add = parser.add_argument
    add("--format", default="onnx", choices=("onnx",), help="output format (default onnx)")
    add("--out", required=True, metavar="FILE", help="the file to write, e.g. model.onnx")
    add("--input-size", type=_argument_type(parse_size), default=None, metavar="S",
        help="input height = width (default: the checkpoint's preprocessing input_size)")
    add("--keep-bn", action="store_true",
        help="export the eval-mode model with BatchNorm nodes instead of folding them")
    add("--opset", type=int, default=None,
        help="ONNX opset, 18 or newer (default 18, the exporter's own)")
    parser.set_defaults(func=_export)


def _add_predict(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict",
        parents=[_weights_options(help=PREDICT_WEIGHTS), _device_options()],
        help="top classes and probabilities of images",
        description="Classify image files with trained weights, preprocessed as their config "
        "says (resize, centre crop, mean/std, grey for one-channel models), and print the top "
        "classes with their probabilities for each image.",
    )
    add = parser.add_argument
    add("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    add("--top", type=int, default=5, metavar="K", help="classes shown per image (default 5)")
    parser.set_defaults(func=_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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

    card = commands.add_parser(
        "card", help="the model card of a registered model or of weights (what README.md holds)"
    )
    card.add_argument(
        "model", metavar="NAME|WEIGHTS",
        help="a registered model name (untrained), or weights: "
        + WEIGHTS_HELP.removeprefix("pass "),
    )
    card.set_defaults(func=_card)

    models = commands.add_parser("models", help="list registered model names")
    models.add_argument("pattern", nargs="?", default="", help="only names containing this text")
    models.add_argument(
        "--table", action="store_true",
        help="every model as a Markdown table: family, #P, MACs, input size, the paper's top-1 "
        "error, published weights (the README's table)",
    )
    models.set_defaults(func=_models)

    _add_train(commands)
    _add_eval(commands)
    _add_analyze(commands)
    _add_export(commands)
    _add_predict(commands)
    return parser


def _weights_argument(args: argparse.Namespace) -> None:
    """``sknet eval WEIGHTS``, the old spelling, as ``--checkpoint WEIGHTS`` (with a note)."""
    if args.weights is not None:
        if args.checkpoint is not None:
            raise UserError("give the weights once: --checkpoint PATH (the positional is old)")
        print(
            "sknet eval: note: `sknet eval WEIGHTS` is deprecated; write `sknet eval "
            "--checkpoint WEIGHTS`, as analyze, export and predict take them",
            file=sys.stderr,
        )
        args.checkpoint = args.weights
    if args.checkpoint is None:
        raise UserError(f"the weights to evaluate are missing: --checkpoint PATH; {WEIGHTS_HELP}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        if args.command == "eval":
            _weights_argument(args)
        threads = None if args.command == "train" else getattr(args, "threads", None)
        with torch_threads(threads):  # train sets its own: a setting recorded with the run
            return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, KeyboardInterrupt) as error:
        if args.debug:
            traceback.print_exc()
        message = "interrupted" if isinstance(error, KeyboardInterrupt) else str(error)
        print(f"sknet {args.command}: error: {message}", file=sys.stderr)
        return 130 if isinstance(error, KeyboardInterrupt) else 2
    except OSError as error:  # a full disk, a read-only folder, met outside the atomic writes
        line = describe(error)
        if line is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"sknet {args.command}: error: {line}", file=sys.stderr)
        return 2
