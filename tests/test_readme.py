"""The README's result tables are copies of the committed results/*.json files, not typed by hand."""

import json

import pytest

from tests.conftest import ROOT


def _rows(readme: str) -> dict[str, list[str]]:
    rows = {}
    for line in readme.splitlines():
        if line.startswith("| ") and line.count("|") > 3:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows


def test_ratings_table_matches_results_json():
    path = ROOT / "results" / "ratings.json"
    if not path.is_file():
        pytest.skip("results/ratings.json not written yet (run llm.ipynb)")
    results = json.loads(path.read_text())
    rows = _rows((ROOT / "README.md").read_text())
    for model in results["models"]:
        assert model["model"] in rows, f"README has no row for {model['model']!r}"
        assert rows[model["model"]][:2] == [f"{model['rmse']:.3f}", f"{model['mae']:.3f}"]
    for interval in results["intervals"]:
        row = rows[f"vs {interval['against']}"]
        assert row[0] == f"{interval['rmse_diff']:+.4f}"
        assert row[1] == f"[{interval['ci95_lo']:+.4f}, {interval['ci95_hi']:+.4f}]"
