"""Helpers shared by the tests: tiny random models, fake tokenizers and embedders, small data files.

Not a test module: tests import from here, never from each other.
"""

import hashlib
import re
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM


# ---------------------------------------------------------------- tiny random models

def tiny_gpt2(seed: int = 0, n_embd: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=n_embd, n_head=2, vocab_size=101, n_positions=64,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return LlamaForCausalLM(cfg).eval()


def build(kind: str, seed: int = 0):
    """(model, LoRAConfig) for a tiny model of the given kind."""
    from lora import LoRAConfig
    if kind == "gpt2":
        return tiny_gpt2(seed), LoRAConfig.gpt2(r=4, alpha=8)
    return tiny_llama(seed), LoRAConfig.llama(r=4, alpha=8, mlp=True)


def randomize_adapters(model, seed: int = 1, std: float = 0.2) -> None:
    """Give every B a non-zero value so the adapter changes the output."""
    from lora import lora_layers
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * std)


# ---------------------------------------------------------------- fake tokenizers

class CharTokenizer:
    """Character-level tokenizer: ids 10.. for characters; EOS 3, pad 7 (distinct sentinels)."""

    eos_token_id, pad_token_id, eos_token = 3, 7, "<eos>"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [10 + (ord(c) % 80) for c in text]}


class WhitespaceTokenizer:
    """One token per whitespace-separated word; BOS id 0 only when special tokens are asked for."""

    model_max_length = 128

    def __init__(self):
        self.vocab = {"<s>": 0}
        self.words = ["<s>"]

    def _id(self, word):
        if word not in self.vocab:
            self.vocab[word] = len(self.words)
            self.words.append(word)
        return self.vocab[word]

    def encode(self, text, add_special_tokens=True):
        return [0] * add_special_tokens + [self._id(w) for w in text.split()]

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)

    def __call__(self, texts, add_special_tokens=True):
        if isinstance(texts, str):
            return {"input_ids": self.encode(texts, add_special_tokens)}
        return {"input_ids": [self.encode(t, add_special_tokens) for t in texts]}


class ByteTokenizer:
    """One token per UTF-8 byte, like a byte-level BPE at its worst: decoding half a character gives U+FFFD."""

    model_max_length = 4096

    def encode(self, text, add_special_tokens=False):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")

    def __call__(self, texts, add_special_tokens=False):
        if isinstance(texts, str):
            return {"input_ids": self.encode(texts)}
        return {"input_ids": [self.encode(t) for t in texts]}


# ---------------------------------------------------------------- fake embedder and QA records

DIM = 64


class HashEmbedder:
    """Bag of words hashed into 64 dims, L2-normalised; records every call."""

    name = "hash-bow-64"

    def __init__(self, dim=DIM):
        self.dim, self.calls = dim, []

    def vector(self, text):
        v = np.zeros(self.dim, dtype=np.float32)
        for w in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return v / max(np.linalg.norm(v), 1e-12)

    def __call__(self, texts):
        self.calls.append(list(texts))
        return np.stack([self.vector(t) for t in texts])


CHUNKS = ["Jaws is a film directed by Steven Spielberg.", "The shark attacks swimmers at Amity Island.",
          "The score was composed by John Williams."]


def records():
    return [
        {"id": "a", "question": "Who composed the score of Jaws?", "answer": "John Williams",
         "answer_aliases": ["John Williams"], "chunks": CHUNKS},
        {"id": "b", "question": "Which island do the swimmers visit?", "answer": "Amity Island",
         "answer_aliases": ["Amity Island", "Amity"], "chunks": CHUNKS[:2] + ["Alien is set in space."]},
    ]


# ---------------------------------------------------------------- MovieLens files

MOVIES = """movieId,title,genres
1,"Matrix, The (1999)",Action|Sci-Fi
2,Toy Story (1995),Animation|Children|Comedy
3,Heat (1995),Action|Crime|Thriller
4,Babylon 5,(no genres listed)
5,Casino (1995),Crime|Drama
6,Sabrina (1995),Comedy|Romance
7,Jumanji (1995),Adventure|Children
"""
# user 1: seven ratings in time order (val = movie 6, test = movie 7); user 2: three, all train
RATINGS = """userId,movieId,rating,timestamp
1,1,5.0,10
1,2,1.0,20
1,3,4.0,30
1,4,2.0,40
1,5,3.0,50
1,6,5.0,60
1,7,4.5,70
2,7,1.0,5
2,5,4.0,6
2,1,3.0,7
"""
TAGS = """userId,movieId,tag,timestamp
2,7,Classic,65
3,7,classic,66
3,7,fun,1
3,7,board game,2
3,7,jungle,3
3,7,future,100
4,7,future,101
5,7,future,102
"""


def write_folder(folder: Path, *, ratings=RATINGS, movies=MOVIES, tags=TAGS, readme=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("ratings.csv", ratings), ("movies.csv", movies), ("tags.csv", tags)):
        if text is not None:
            (folder / name).write_text(text)
    if readme:
        (folder / "README.txt").write_text("licence text")
    return folder
