"""Model cards: what ``save_pretrained`` writes beside the weights of a folder, and
``sknet card``; their numbers are ``sknet profile``'s."""

import json

from tiny import TINY

import sknet
from sknet.cli import main
from sknet.models.complexity import short_count
from sknet.profiling import profile


def test_a_folder_gets_a_card_a_file_does_not(tmp_path):
    model = sknet.create_model("sknet_digits", **TINY)
    names = [f"digit {i}" for i in range(10)]
    model.save_pretrained(tmp_path / "digits", class_names=names,
                          preprocessing={"input_size": 8, "mean": [0.3], "std": [0.4]})
    card = (tmp_path / "digits" / "README.md").read_text()
    params = sum(p.numel() for p in model.parameters())
    assert card.startswith("# sknet_digits\n") and f"| parameters | {short_count(params)} |" in card
    macs = short_count(profile("sknet_digits", 8, **TINY).counted("sk"))  # the recorded size
    assert f"| multiply-adds | {macs} at 8x8 |" in card
    assert "| classes | 10 (digit 0, digit 1, digit 2, digit 3, digit 4, ...) |" in card
    assert "centre 8x8 crop" in card and 'sknet.load_pretrained("digits")' in card
    assert "In timm" not in card  # no timm counterpart
    sknet.save_pretrained(model, tmp_path / "best.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors", "digits"]


def test_a_training_run_and_a_timm_import_say_where_their_weights_come_from(tiny_run, tmp_path):
    trained = sknet.load_pretrained(tiny_run)
    trained.save_pretrained(tmp_path / "release")
    card = (tmp_path / "release" / "README.md").read_text()
    record = json.loads((tiny_run / "best.json").read_text())
    error = record["top1_err"]
    assert f"trained with sknet on `digits`, best epoch 1, top-1 error {error}%" in card
    assert "by `sknet.train(" in card and "sknet 0.1.0" in card


def test_sknet_card_agrees_with_sknet_profile(capsys):
    assert main(["card", "sknet50"]) == 0
    card = capsys.readouterr().out
    counted = profile("sknet50")
    assert f"| parameters | {short_count(counted.params)} (paper: 27.5M) |" in card
    macs = counted.counted("sk") / 1e9
    assert f"| multiply-adds | {macs:.2f}G at 224x224 (paper: 4.47G) |" in card
    assert "| paper top-1 error | 20.79% (224x224) |" in card
    assert 'timm.create_model("skresnext50_32x4d", num_classes=ours.num_classes)' in card
    assert main(["card", "nowhere/at/all"]) == 2
    assert "no weights there" in capsys.readouterr().err
