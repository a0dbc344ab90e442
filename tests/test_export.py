"""``sknet.deploy`` (BatchNorm folded into convolutions, nothing else changed) and ONNX export."""

import errno
import os
import re
import sys

import pytest
import torch
from tiny import TINY
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import sknet
from sknet.layers import ConvBnAct
from sknet.models import create_model, get_entry, list_models


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial statistics and affine parameters in every BatchNorm."""
    for bn in model.modules():
        if isinstance(bn, _BatchNorm):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("name", list_models())
def test_deploy_equals_eval(name):
    """In fp64: the fold is exact, but fp32 round-off grows through a deep network with
    randomised BNs (resnest269e, 269 layers: 1e-3 relative in fp32, 3e-12 in fp64)."""
    model = create_model(name, num_classes=10)
    randomize_bn(model)
    model.eval().double()
    deployed = sknet.deploy(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    assert not deployed.training
    x = torch.randn(2, get_entry(name).config.get("in_chans", 3), 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected, got = model(x), deployed(x)
    error = torch.linalg.vector_norm(got - expected) / torch.linalg.vector_norm(expected)
    assert error < 1e-10
    # The original is untouched and the module tree keeps its names.
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    names = {n for n, _ in model.named_modules()}
    assert {n for n, _ in deployed.named_modules()} == names


def test_deployed_attention_hooks_still_see_the_weights():
    model = create_model("sknet26", num_classes=10).eval()
    randomize_bn(model)
    deployed = sknet.deploy(model)
    seen = {}
    for name, unit in deployed.sk_units().items():
        unit.attention.register_forward_hook(lambda m, i, o, name=name: seen.update({name: o}))
    with torch.no_grad():
        deployed(torch.randn(3, 3, 32, 32))
    assert len(seen) == 8
    weights = seen["SK_3_1"]
    assert weights.shape == (3, 2, 256)
    torch.testing.assert_close(weights.sum(1), torch.ones(3, 256))


def test_deploy_folds_the_fuse_bn_into_its_conv():
    unit = sknet.create_model("sknet26").sk_units()["SK_2_1"]
    fuse = sknet.deploy(unit).attention.fuse
    assert isinstance(fuse.bn, nn.Identity) and fuse.conv.bias is not None


def test_deploy_rejects_a_batchnorm_it_cannot_fold():
    model = nn.Sequential(ConvBnAct(3, 8, 3), nn.BatchNorm2d(8))
    with pytest.raises(ValueError, match=r"cannot fold BatchNorm2d '1' \(1 norms in all\)"):
        sknet.deploy(model)
    with pytest.raises(ValueError, match="cannot fold FrozenBatchNorm2d '1'"):
        sknet.deploy(sknet.freeze_norm(model))


@pytest.mark.parametrize("where", ["0.bn", "stages.0.blocks.0.norm1"])
def test_deploy_rejects_a_batchnorm_without_running_statistics(where):
    """Both ways of folding (a Sequential's conv + BN, LSKNet's own fold) refuse in one line."""
    model = nn.Sequential(ConvBnAct(3, 8, 3)) if where == "0.bn" else create_model("lsknet_digits")
    parent, name = where.rsplit(".", 1)
    setattr(model.get_submodule(parent), name, nn.BatchNorm2d(
        model.get_submodule(where).num_features, track_running_stats=False
    ))
    with pytest.raises(ValueError, match=rf"deploy: BatchNorm '{re.escape(where)}' keeps no run"):
        sknet.deploy(model)


def test_deploy_folds_sync_batchnorm_too():
    model = nn.SyncBatchNorm.convert_sync_batchnorm(create_model("sknet26", num_classes=4))
    randomize_bn(model)
    model.eval()
    deployed = sknet.deploy(model)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in deployed.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), rtol=1e-4, atol=1e-5)


# -- ONNX ------------------------------------------------------------------------------------

DIGITS_PREPROCESSING = {"input_size": 16, "resize": 16, "mean": [0.3], "std": [0.4]}


def _onnx_logits(path, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    return torch.from_numpy(session.run(["logits"], {graph_input.name: x.numpy()})[0])


def _op_types(path):
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _max_diff_at_two_batch_sizes(model, path, shape):
    """Largest |onnxruntime - PyTorch eval| over random inputs of batch 1 and 3."""
    worst = 0.0
    for batch in (1, 3):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            expected = model(x)
        got = _onnx_logits(path, x)
        assert got.shape == expected.shape
        worst = max(worst, (got - expected).abs().max().item())
    return worst


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [("sknet_digits", TINY, (1, 16, 16)), ("sknet26", {}, (3, 64, 64))],
    ids=["tiny", "sknet26"],
)
def test_onnx_export_equals_pytorch_at_any_batch(name, kwargs, shape, tmp_path):
    model = create_model(name, **kwargs)
    randomize_bn(model)
    model.eval()
    path = sknet.export_onnx(model, tmp_path / "model.onnx", input_size=shape[1:])
    assert path == tmp_path / "model.onnx" and not list(tmp_path.glob(".*"))
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # weights inside, no .data
    assert "BatchNormalization" not in _op_types(path)  # deploy mode: folded
    diff = _max_diff_at_two_batch_sizes(model, path, shape)
    print(f"{name}: max abs diff onnxruntime vs PyTorch eval {diff:.2e}")
    assert diff <= 1e-4
    assert model.training is False and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def _checkpoint(tmp_path):
    """A training-run-like folder: best.safetensors + best.json of a tiny digits model."""
    model = create_model("sknet_digits", **TINY)
    randomize_bn(model)
    sknet.save_pretrained(
        model.eval(), tmp_path / "run" / "best.safetensors", preprocessing=DIGITS_PREPROCESSING
    )
    return model, tmp_path / "run"


def _cli(capsys, *argv):
    from sknet.cli import main

    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.strip().splitlines()


def test_cli_exports_a_run_folder_at_its_input_size(tmp_path, capsys):
    model, run = _checkpoint(tmp_path)
    out = tmp_path / "model.onnx"
    status, printed, _ = _cli(capsys, "export", "--checkpoint", run, "--format", "onnx",
                              "--out", out)
    assert status == 0 and "Nx1x16x16" in printed and "BatchNorm folded" in printed
    import onnxruntime

    (graph_input,) = onnxruntime.InferenceSession(str(out)).get_inputs()
    assert graph_input.shape[1:] == [1, 16, 16] and isinstance(graph_input.shape[0], str)
    assert _max_diff_at_two_batch_sizes(model, out, (1, 16, 16)) <= 1e-4

    status, printed, _ = _cli(capsys, "export", "--checkpoint", run / "best.safetensors",
                              "--out", out, "--input-size", "24", "--keep-bn")
    assert status == 0 and "Nx1x24x24" in printed and "BatchNorm kept" in printed
    assert "BatchNormalization" in _op_types(out)  # eval mode: BN nodes of their own
    assert _max_diff_at_two_batch_sizes(model, out, (1, 24, 24)) <= 1e-4


def test_cli_bad_checkpoint_and_missing_onnx_fail_in_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "model.onnx"
    status, _, err = _cli(capsys, "export", "--checkpoint", tmp_path / "nowhere", "--out", out)
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"sknet export: error: --checkpoint {tmp_path / 'nowhere'}")
    assert "no weights there" in err[0]

    _, run = _checkpoint(tmp_path)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    status, _, err = _cli(capsys, "export", "--checkpoint", run, "--out", out)
    assert status == 2 and len(err) == 1 and "pip install 'sknet[onnx]'" in err[0]
    assert "onnxscript is missing" in err[0] and not out.exists()


def test_a_failed_onnx_write_keeps_the_previous_file(tmp_path, monkeypatch):
    model = create_model("sknet_digits", **TINY).eval()
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")

    class Program:  # what torch.onnx.export returns; this one fails halfway through saving
        def save(self, destination, **options):
            with open(destination, "wb") as file:
                file.write(b"half a model")
            raise OSError("disk full")

    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: Program())
    with pytest.raises(OSError, match="disk full"):
        sknet.export_onnx(model, path, input_size=16)
    assert path.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == [path.name]


def _opset(path):
    import onnx

    return {entry.domain: entry.version for entry in onnx.load(str(path)).opset_import}[""]


def test_cli_honours_the_opset_or_refuses_it_in_one_line(tmp_path, capsys):
    _, run = _checkpoint(tmp_path)
    out = tmp_path / "model.onnx"
    status, printed, _ = _cli(capsys, "export", "--checkpoint", run, "--out", out, "--opset", "20")
    assert status == 0 and printed.strip().endswith("opset 20") and _opset(out) == 20
    out.unlink()
    for opset in ("3", "17", "999"):  # 3 once printed "opset 3" and wrote 18
        status, printed, err = _cli(capsys, "export", "--checkpoint", run, "--out", out,
                                    "--opset", opset)
        assert status == 2 and len(err) == 1 and not printed
        assert err[0].startswith(f"sknet export: error: ONNX opset {opset}: torch's exporter "
                                 "writes opsets 18..")
        assert not out.exists()


def test_cli_refuses_bad_sizes_in_one_line(tmp_path, capsys):
    _, run = _checkpoint(tmp_path)
    for size in ("0", "4", "100000"):  # 0 once exported at the checkpoint's 16 without a word
        with pytest.raises(SystemExit) as exit:
            _cli(capsys, "export", "--checkpoint", run, "--out", tmp_path / "m.onnx",
                 "--input-size", size)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit.value.code == 2 and len(err) == 1
        assert f"argument --input-size: the size must be in 8..8192 pixels, got {size}" in err[0]
    with pytest.raises(ValueError, match=r"the input height must be in 8\.\.8192 pixels, got 0"):
        sknet.export_onnx(create_model("sknet_digits", **TINY), tmp_path / "m.onnx",
                          input_size=0)
    assert not list(tmp_path.glob("*.onnx"))


def test_an_out_that_cannot_be_written_or_a_full_disk_fail_in_one_line(
    tmp_path, capsys, monkeypatch
):
    _, run = _checkpoint(tmp_path)
    status, _, err = _cli(capsys, "export", "--checkpoint", run, "--out", tmp_path)
    assert status == 2 and err == [
        f"sknet export: error: --out {tmp_path}: is a folder; name the file to write in it"
    ]
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    status, _, err = _cli(capsys, "export", "--checkpoint", run, "--out", out)
    assert status == 2 and len(err) == 1
    assert err[0].startswith("sknet export: error: no space left on ")
    assert f"while writing {out}; the previous model.onnx is intact" in err[0]
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.glob(".*")] == []
