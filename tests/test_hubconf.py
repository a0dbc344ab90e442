"""``torch.hub`` with ``source="local"``: every registered model is an entry point."""

import importlib.util
from pathlib import Path

import torch
from tiny import TINY

import sknet

ROOT = Path(__file__).resolve().parents[1]


def test_every_model_is_an_entry_point_and_loads_weights(tmp_path):
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entry_points = [name for name in dir(hubconf) if callable(getattr(hubconf, name))
                    and not name.startswith("_")]  # what torch.hub lists
    assert entry_points == sknet.list_models()
    model = sknet.create_model("sknet_digits", **TINY).eval()
    model.save_pretrained(tmp_path / "w")
    loaded = torch.hub.load(
        str(ROOT), "sknet_digits", source="local", pretrained=tmp_path / "w"
    ).eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x), model(x)) and loaded.record == model.record
    fresh = torch.hub.load(str(ROOT), "sknet26", source="local", num_classes=7)
    assert fresh.num_classes == 7 and fresh.record.name == "sknet26"
