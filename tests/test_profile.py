from pathlib import Path

import pytest

from sknet.cli import main
from sknet.models import list_models, paper_rows
from sknet.profiling import (
    Printed,
    check_row,
    family,
    format_table,
    model_table,
    profile,
    report,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "reproducing.md"


@pytest.fixture(scope="module")
def reports():
    return report()


def test_sknet50_matches_the_official_release():
    counts = profile("sknet50")
    assert counts.params == 27_479_784
    assert round(counts.macs / 1e9, 2) == 4.46
    assert round(counts.counted("sk") / 1e9, 2) == 4.47


def test_resnext50_and_the_sk_overhead():
    base, sk = profile("resnext50_32x4d"), profile("sknet50")
    assert base.params == 25_028_904
    assert round(base.macs / 1e9, 2) == 4.23 and round(base.counted("senet") / 1e9, 2) == 4.24
    assert 0.09 < sk.params / base.params - 1 < 0.11  # "~10% parameters"
    assert 0.04 < sk.macs / base.macs - 1 < 0.06  # "~5% computation"


def test_known_public_counts():
    assert round(profile("sknet101").params / 1e6, 2) == 48.74
    assert round(profile("seresnext50_32x4d").params / 1e6, 2) == 27.56


def test_every_paper_row_passes_the_check(reports):
    tables = [r.row.paper.source.split(" (")[0] for r in reports]
    assert tables.count("Table 6") == 5 and tables.count("Table 7") == 11
    assert tables.count("Table 4") == 8  # 2 widths x (original, SK authors', +SE, +SK)
    assert tables.count("Table 5") == 10  # 5 models x (10, 100 classes)
    off = [r.row.label for r in reports if not r.ok]
    assert not off


def test_every_new_model_has_a_profile_row(reports):
    labels = {r.row.label for r in reports}
    new = {"sknet26", "sknet29", "senet29"} | set(list_models("resnext29"))
    new |= set(list_models("shufflenet"))
    assert len(new) == 12 and new <= labels


def test_docs_show_the_current_table(reports):
    """docs/reproducing.md holds the output of `sknet profile`; regenerate it when this fails."""
    assert format_table(reports) in DOCS.read_text()


def test_check_fails_on_an_undocumented_gap():
    row = next(r for r in paper_rows() if r.label == "T7 K3+K5 SK")
    wrong = type(row)(row.label, row.model, {**row.kwargs, "reduction": 4}, row.paper)
    assert not check_row(wrong).ok


def test_printed_precision():
    assert Printed("27.5M").matches(27_479_784)
    assert not Printed("27.6M").matches(27_549_352)
    assert Printed("4.47G").matches(4.4682e9)
    assert Printed("40.39M").tolerance == pytest.approx(5e3)


def test_cli_profile_check(capsys):
    assert main(["profile", "--check", "--rows", "T6"]) == 0
    out = capsys.readouterr().out
    assert "T6 K3 + 5x5 D1 G64" in out and "documented" in out


def test_cli_errors_are_one_line(capsys):
    assert main(["profile", "--rows", "no such row"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sknet profile: error:")


def test_the_function_does_not_shadow_its_module():
    import sknet.profiling

    assert sknet.profile is sknet.profiling.profile and callable(sknet.profile)
    assert sknet.profile("sknet_digits", 16).params == 178_986


def test_readme_shows_the_current_model_table():
    """README.md holds `sknet models --table` between its markers; regenerate it when this
    fails (the counts, the paper's errors and the hub ids come from the registry)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = readme.split("<!-- model-table -->\n", 1)[1].split("\n<!-- /model-table -->", 1)[0]
    table = model_table()
    assert shown == table
    assert len(table.splitlines()) == 2 + len(list_models())
    assert "| `sknet50` | SKNet | 27.48M | 4.47G | 224 | 20.79 (Tables 1-2) |" in table


def test_families_and_sizes_come_from_the_configs():
    from sknet.models import get_entry
    from sknet.models.registry import UNSIZED_INPUT
    from sknet.training.recipe import DIGITS_RECIPE

    assert DIGITS_RECIPE.input_size == UNSIZED_INPUT == get_entry("sknet_digits").input_size
    expected = {
        "sknet50": "SKNet", "sknet29": "SKNet (CIFAR)", "sknet_digits": "SKNet (digits)",
        "resnext50_32x4d": "ResNeXt", "seresnext50_32x4d": "SENet", "resnet18": "ResNet",
        "skresnet18": "SK-ResNet", "shufflenet_v2_x1_0": "ShuffleNetV2",
        "se_shufflenet_v2_x1_0": "SE-ShuffleNetV2", "sk_shufflenet_v2_x1_0": "SK-ShuffleNetV2",
        "senet_digits": "SENet (digits)", "resnext29_8x64d": "ResNeXt (CIFAR)",
        "lsknet_t": "LSKNet",
        "resnest50d": "ResNeSt", "resnest50d_1s4x24d": "ResNeSt",
    }
    assert {name: family(get_entry(name)) for name in expected} == expected


def test_cli_models_table_prints_the_function(capsys, monkeypatch):
    monkeypatch.setattr("sknet.cli.model_table", lambda: "| the table |")
    assert main(["models", "--table"]) == 0
    assert capsys.readouterr().out == "| the table |\n"
