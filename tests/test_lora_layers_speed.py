import importlib.util
import json
from types import SimpleNamespace

from cinephile import models
from cinephile.report import lora_layers_table
from tests.conftest import ROOT
from tests.helpers import tiny_llama


def _benchmark():
    spec = importlib.util.spec_from_file_location("lora_layers_speed", ROOT / "benchmarks" / "lora_layers_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_top_blocks_alone_carry_adapters_and_the_file_holds_every_setting(monkeypatch, tmp_path, capsys):
    bench = _benchmark()
    monkeypatch.setattr(bench, "SEQ", 12)
    monkeypatch.setattr(models, "load_base_model",
                        lambda name, dtype=None: (tiny_llama(), SimpleNamespace(pad_token_id=1)))
    every, half = bench.worker("tiny", 1.0, 1), bench.worker("tiny", 0.5, 1)
    assert (every["layers"], half["layers"]) == ([0, 2], [1, 2])  # the tiny model has two blocks
    assert every["lora_params"] == 2 * half["lora_params"] > 0 and len(half["steps_s"]) == 1
    monkeypatch.setattr(bench, "run", lambda name, share, steps: bench.worker(name, share, steps))
    out = tmp_path / "bench.json"
    bench.main(["--model", "tiny", "--steps", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert list(saved["settings"]) == list(bench.SHARES)
    assert saved["settings"]["every block"]["speedup_vs_every_block"] == 1
    assert saved["settings"]["top quarter"]["layers"] == [1, 2]  # at least one block
    assert "speed-up" in capsys.readouterr().out
    lines = lora_layers_table(saved).splitlines()
    assert lines[0].startswith("| adapters on (tiny, batch 8 x 12 tokens,") and len(lines) == 5
    assert lines[2].startswith("| every block | 0-1 | 0.01 M |") and "**1.00x**" in lines[2]
    assert lines[3].startswith("| top half | 1-1 |")
