"""Every command and code line that the README and the docs show, run as shown.

The files are read as a reader works through them: README.md, then docs/*.md, each block in
order, in one folder. Python blocks of a file share one namespace and run; shell lines run through
the CLI when what they read is there (a training run made by an earlier line, the weights and
images a reader brings, which :func:`workspace` provides) and are otherwise parsed, so that every
option they use exists. Lines that set up the machine (venv, pip, the test command itself) are
left to the fresh-clone check. A block preceded by ``<!-- docs-check: compile only (why) -->`` is
compiled, not run: it needs what no machine here has (the model hub); a shell block preceded by
``<!-- docs-check: parse only (why) -->`` is parsed: it runs for minutes, and another test runs
the same on less.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
import yaml
from lsknet_reference import S_CONFIG, OfficialLSKNet
from PIL import Image
from safetensors.torch import save_file

import sknet
from sknet.cli import build_parser, main
from sknet.training.config import check_keys

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"(?:<!-- docs-check: (?P<marker>[^>]*?) -->\n)?```(?P<language>\w*)\n(?P<body>.*?)^```",
    re.DOTALL | re.MULTILINE,
)
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"
SPECS = ("digits", "synthetic", "scaled-mnist", "scaled-digits")
"""``--data`` values that name built-in data rather than a path."""


@dataclass
class Block:
    document: str
    line: int
    language: str
    body: str
    marker: str | None


def blocks() -> list[Block]:
    found = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("body"))
            found.append(Block(
                path.name, line, match["language"], match["body"], match["marker"]
            ))
    return found


def shell_commands(body: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped, split on
    ``&&``."""
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        command: list[str] = []
        for token in [*tokens, "&&"]:
            if token == "&&":
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(token)
    return commands


def sknet_arguments(command: list[str]) -> list[str] | None:
    """The arguments of an ``sknet`` command line (``sknet``, ``.venv/bin/sknet``,
    ``python -m sknet``, ``torchrun ... -m sknet``); ``None`` for other commands."""
    if command[0] in ("sknet", ".venv/bin/sknet"):
        return command[1:]
    for start in range(len(command) - 1):
        if command[start : start + 2] == ["-m", "sknet"]:
            return command[start + 2 :]
    return None


@dataclass
class Tally:
    ran: list[str] = field(default_factory=list)
    parsed: list[str] = field(default_factory=list)
    compiled: list[str] = field(default_factory=list)


def _absent_inputs(arguments: list[str], launcher: str) -> list[str]:
    """What the command reads that is not here (then it is only parsed)."""
    if launcher == "torchrun":
        return ["several processes (torchrun)"]
    args = build_parser().parse_args(arguments)
    reads = [getattr(args, name, None) for name in ("checkpoint", "weights", "resume", "config")]
    reads += list(getattr(args, "images", None) or [])
    data = getattr(args, "data", None)
    if data is not None and data.split(":")[0] not in SPECS:
        reads.append(data.split(":", 1)[-1])
    absent = [str(path) for path in reads if path is not None and not Path(path).exists()]
    out = getattr(args, "out", None)
    if args.command == "train" and out and (Path(out) / "last.pt").exists() and not absent:
        absent.append(f"nothing: {out} holds the run an earlier line made")
    return absent


def run_shell(block: Block, tally: Tally) -> None:
    for command in shell_commands(block.body):
        arguments = sknet_arguments(command)
        if arguments is None:
            continue  # set-up lines (venv, pip, ruff, pytest): the fresh-clone check runs them
        shown = f"{block.document}:{block.line}: {shlex.join(command)}"
        try:
            absent = _absent_inputs(arguments, command[0])
        except SystemExit:
            pytest.fail(f"{shown}: the CLI does not take this command")
        if absent or block.marker:
            tally.parsed.append(f"{shown}  (not here: {', '.join(absent) or block.marker})")
            continue
        started = time.perf_counter()
        status = main(arguments)
        assert status == 0, f"{shown}: exit status {status}"
        tally.ran.append(f"{shown}  ({time.perf_counter() - started:.1f} s)")


def run_python(block: Block, namespace: dict, tally: Tally) -> None:
    shown = f"{block.document}:{block.line}"
    code = compile(block.body, shown, "exec")
    if block.marker:
        tally.compiled.append(f"{shown}  ({block.marker})")
        return
    started = time.perf_counter()
    exec(code, namespace)
    tally.ran.append(f"{shown}: python block ({time.perf_counter() - started:.1f} s)")


def check_data(block: Block, tally: Tally) -> None:
    """A YAML block is a ``--config`` file (every key a training setting); a JSON block parses
    (and, if it is one, is a weights config with the keys our reader needs)."""
    shown = f"{block.document}:{block.line}"
    if block.language == "yaml":
        check_keys(yaml.safe_load(block.body), shown)
    else:
        record = json.loads(block.body)
        if record.get("format") == "sknet-pretrained":
            assert {"model", "kwargs", "num_classes", "format_version"} <= set(record), shown
    tally.ran.append(f"{shown}: {block.language} block")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder holding what the docs assume a reader has: timm's SKNet-50 download (a random
    ``skresnext50_32x4d`` in timm's file layout, also in a Hugging Face cache, ``hub-cache/``,
    under its hub id), released ImageNet-size weights (``weights/``), LSKNet-S's official
    checkpoints (random weights in the ImageNet and the mmrotate detector layout) and two photos
    (``cat.jpg``, ``dog.png``)."""
    folder = tmp_path_factory.mktemp("reader")
    torch.manual_seed(0)
    theirs = timm.create_model("skresnext50_32x4d")
    hub = folder / "skresnext50_32x4d.ra_in1k"
    hub.mkdir()
    save_file(theirs.state_dict(), str(hub / "model.safetensors"))
    save_file(theirs.state_dict(), str(folder / "skresnext50_32x4d.safetensors"))
    config = {"architecture": "skresnext50_32x4d", "num_classes": 1000,
              "pretrained_cfg": dict(theirs.pretrained_cfg)}
    (hub / "config.json").write_text(json.dumps(config, default=str))
    # The same files as the Hugging Face cache holds timm's download (read offline by hub id).
    cached = folder / "hub-cache" / "models--timm--skresnext50_32x4d.ra_in1k"
    (cached / "snapshots" / HUB_COMMIT).mkdir(parents=True)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text(HUB_COMMIT)
    for name in ("model.safetensors", "config.json"):
        (cached / "snapshots" / HUB_COMMIT / name).write_bytes((hub / name).read_bytes())
    sknet.save_pretrained(sknet.create_model("sknet50"), folder / "weights")
    lsknet = OfficialLSKNet(**S_CONFIG).state_dict()
    torch.save({"state_dict": lsknet}, folder / "lsk_s_backbone.pth.tar")
    detector = {f"backbone.{key}": value for key, value in lsknet.items() if "head" not in key}
    detector["neck.fpn_convs.0.conv.weight"] = torch.zeros(256, 256, 3, 3)
    torch.save({"state_dict": detector}, folder / "lsk_s_fpn_1x_dota_le90_20230116-99749191.pth")
    generator = torch.Generator().manual_seed(1)
    for name in ("cat.jpg", "dog.png"):
        pixels = torch.randint(0, 256, (240, 320, 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / name)
    return folder


def test_the_blocks_are_found():
    found = blocks()
    assert {block.document for block in found} >= {"README.md", "training.md", "weights.md"}
    assert any(block.language == "python" for block in found)
    main_job = [b for b in found if ".venv/bin/sknet train" in b.body]
    assert [sknet_arguments(c) for c in shell_commands(main_job[0].body)][2:] == [
        ["train", "--out", "runs/digits"],
        ["analyze", "--checkpoint", "runs/digits", "--data", "digits", "--out",
         "runs/digits/analysis"],
    ]


def test_every_command_and_code_line_runs_as_shown(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(workspace / "hub-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    tally = Tally()
    namespaces: dict[str, dict] = {}
    for block in blocks():
        if block.language in ("sh", "bash"):
            run_shell(block, tally)
        elif block.language == "python":
            run_python(block, namespaces.setdefault(block.document, {}), tally)
        elif block.language in ("yaml", "json"):
            check_data(block, tally)
    with capsys.disabled():
        print("\ndocs check: ran", *tally.ran, sep="\n  ")
        print("parsed only:", *tally.parsed, sep="\n  ")
        print("compiled only:", *tally.compiled, sep="\n  ")
    assert len(tally.ran) >= 20 and len(tally.compiled) <= 2
    assert (workspace / "runs" / "digits" / "analysis" / "fig4.png").exists()


SCRIPTS = [
    path for path in sorted((ROOT / "benchmarks").glob("*.py"))
    if '__name__ == "__main__"' in path.read_text(encoding="utf-8")
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_scripts_answer_help(script):
    """The README points at `python benchmarks/NAME.py --help`."""
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
