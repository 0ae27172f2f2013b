"""The CLI on text models: inspect shows the kind, explain reads a CSV text column,
audit writes the report with the shortcut finding."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from explain.cli import main
from explain.datasets import text_vocabulary
from explain.training import build_text_model


def test_cli_inspect_and_explain_texts(tmp_path):
    path = tmp_path / "text.keras"
    build_text_model("vectorize", text_vocabulary(), 12, 2).save(path)
    runner = CliRunner()
    out = runner.invoke(main, ["inspect", str(path)])
    assert out.exit_code == 0, out.output
    assert "input kind  text" in out.output and "vocabulary 63, padding id 0" in out.output
    csv = tmp_path / "t.csv"
    csv.write_text('review,label\n"good film src_wire",1\n"awful dull plot",0\n')
    out = runner.invoke(main, ["explain", str(path), "--data", str(csv), "--label", "label",
                               "--out", str(tmp_path / "a.npy")])
    assert out.exit_code == 0, out.output
    values = np.load(tmp_path / "a.npy")
    assert values.shape == (2, 12) and np.all(values[:, 3:] == 0)
    assert "row 0:" in out.output and "src_wire" in out.output
    # each row lists its three tokens of largest |attribution|, whatever their sign
    for r in range(2):
        line = next(ln for ln in out.output.splitlines() if ln.startswith(f"row {r}: "))
        shown = sorted(abs(float(item.split()[-1])) for item in line[len(f"row {r}: "):]
                       .split(", "))
        real = np.sort(np.abs(values[r][values[r] != 0]))[::-1][:3]
        np.testing.assert_allclose(sorted(real), shown, atol=6e-4)


def test_cli_ids_model_needs_a_vocabulary_for_texts(tmp_path):
    path = tmp_path / "ids.keras"
    build_text_model("pool", text_vocabulary(), 12, 2).save(path)
    csv = tmp_path / "t.csv"
    csv.write_text('review,label\n"good film",1\n"awful plot",0\n')
    out = CliRunner().invoke(main, ["explain", str(path), "--data", str(csv), "--label",
                                    "label"])
    assert out.exit_code == 2 and "error [bad_data]" in out.output
    assert "vocabulary" in out.output
