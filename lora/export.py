"""Export a PEFT-layout LoRA adapter for llama.cpp and Ollama.

`export_gguf_adapter` writes a GGUF LoRA adapter in the layout that llama.cpp's
`convert_lora_to_gguf.py` produces (`general.type = "adapter"`, `adapter.type = "lora"`,
`adapter.lora.alpha`, tensors `blk.{i}.attn_q.weight.lora_a` / `.lora_b`, ...), so the file
loads with `llama-cli --lora`, `llama_cpp.Llama(lora_path=...)` or Ollama's `ADAPTER`.
The Ollama Modelfile that pairs a base GGUF with the adapter is model-specific and lives with
deployment (``cinephile.deploy.write_modelfile``).

Layout notes:
- A numpy array of shape (rows, cols) is stored in GGUF with ne = [cols, rows], so PEFT's
  lora_A (r, in) becomes ne = [in, r] and lora_B (out, r) becomes ne = [r, out]: exactly what
  llama.cpp checks against the base weight ne = [in, out].
- llama.cpp's Llama converter permutes the rows of q_proj and k_proj for its RoPE layout
  (`LlamaModel.permute` in convert_hf_to_gguf.py). The output rows of a LoRA delta B @ A are
  the rows of B, so lora_B of q_proj/k_proj gets the same permutation; lora_A does not.

References: llama.cpp convert_lora_to_gguf.py, convert_hf_to_gguf.py (LlamaModel),
src/llama-adapter.cpp.
"""

import logging
import math
import os
import re
from pathlib import Path

import gguf
import numpy as np
from safetensors.torch import load_file

from .atomic import atomic_path
from .io import CONFIG_NAME, WEIGHTS_NAME, read_adapter_json

logger = logging.getLogger(__name__)

# PEFT module name -> llama.cpp tensor name inside `blk.{i}`.
GGUF_NAMES = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
}
_KEY = re.compile(
    r"^base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\."
    r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_([AB])\.weight$"
)
_KEY_HELP = "base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight (or mlp.{gate,up,down}_proj)"

def permute_rope_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder output rows from the HF rotate-half RoPE layout to llama.cpp's layout.

    Args:
        weight: (out, ...) array whose rows are `n_head` heads of `head_dim` rows each.
        n_head: number of heads the rows belong to (query heads for q, kv heads for k).

    Returns:
        Array of the same shape with rows permuted as llama.cpp's `LlamaModel.permute`.
    """
    out = weight.shape[0]
    if out % (2 * n_head):
        raise ValueError(f"cannot permute {out} rows into {n_head} heads of even size; "
                         "check llama.attention.head_count(_kv) of the base GGUF")
    return (weight.reshape(n_head, 2, out // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _read_base(base_gguf: Path) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """Read the hyper-parameters and tensor shapes (ne order) of a llama base GGUF."""
    if not base_gguf.is_file():
        raise FileNotFoundError(f"base GGUF {base_gguf} not found; pass the .gguf file of the base model")
    try:  # the reader maps the whole file: a truncated one fails in numpy with no hint of the cause
        reader = gguf.GGUFReader(base_gguf)
    except Exception as err:  # ValueError, IndexError, struct errors: whatever the cut hits
        raise ValueError(f"base GGUF {base_gguf} is truncated or corrupt ({type(err).__name__}: {err}); "
                         "re-create it (download or convert the base model again)") from None
    arch = reader.get_field("general.architecture")
    if arch is None or arch.contents() != "llama":
        found = None if arch is None else arch.contents()
        raise ValueError(f"base GGUF {base_gguf.name} has architecture {found!r}; only 'llama' is supported")
    hparams = {}
    for key in ("block_count", "embedding_length", "attention.head_count", "attention.head_count_kv"):
        field = reader.get_field(f"llama.{key}")
        if field is None and key != "attention.head_count_kv":
            raise ValueError(f"base GGUF {base_gguf.name} is missing metadata 'llama.{key}'")
        hparams[key] = int(field.contents()) if field is not None else hparams["attention.head_count"]
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    return hparams, shapes


def _read_adapter(adapter_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Load adapter_config.json and adapter_model.safetensors, with clear errors."""
    config = read_adapter_json(adapter_dir)  # names a missing or malformed config
    weights_path = adapter_dir / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} not found; an adapter directory needs {CONFIG_NAME} "
                                f"and {WEIGHTS_NAME} (save it with save_adapter or save_pretrained)")
    if config.get("alpha_pattern"):
        raise ValueError("adapter_config.json sets alpha_pattern; a GGUF adapter holds one lora_alpha, "
                         "retrain with a single lora_alpha")
    try:
        state = load_file(weights_path)
    except Exception as err:  # safetensors raises its own error types for truncated files
        raise ValueError(f"{weights_path} is not a readable safetensors file ({err}); save the adapter again") from None
    return config, {k: v.float().numpy() for k, v in state.items()}


def _pair_tensors(state: dict[str, np.ndarray]) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """Group PEFT keys into {(layer, module): {"A": ..., "B": ...}} and reject anything else."""
    pairs: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, value in state.items():
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"unexpected adapter key {key!r}; expected keys like {_KEY_HELP}")
        layer, module, half = int(match[1]), match[2], match[3]
        pairs.setdefault((layer, module), {})[half] = value
    for (layer, module), pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            missing = ({"A", "B"} - set(pair)).pop()
            raise ValueError(f"layer {layer} {module} has no lora_{missing}.weight; the adapter file is incomplete")
    if not pairs:
        raise ValueError(f"adapter has no LoRA tensors; expected keys like {_KEY_HELP}")
    return pairs


def export_gguf_adapter(adapter_dir: str | os.PathLike, out_path: str | os.PathLike, *,
                        base_gguf: str | os.PathLike, outtype: str = "f32",
                        _permute_qk: bool = True) -> Path:
    """Write a PEFT-layout LoRA adapter as a llama.cpp GGUF LoRA adapter.

    Args:
        adapter_dir: directory with adapter_config.json and adapter_model.safetensors (PEFT keys).
        out_path: the .gguf file to write (written to a temporary file, then renamed).
        base_gguf: the base model's GGUF (Llama architecture); its head counts set the q/k
            row permutation and its tensor shapes validate the adapter.
        outtype: "f32" or "f16", the storage type of the LoRA tensors.
        _permute_qk: apply llama.cpp's RoPE row permutation to q/k lora_B (off only for tests).

    Returns:
        The path of the written GGUF adapter.

    Raises:
        FileNotFoundError: missing adapter files or base GGUF.
        ValueError: an invalid adapter, or a base GGUF that is truncated, corrupt or of another
            model; everything is checked before ``out_path`` is written.
    """
    adapter_dir, out_path, base_gguf = Path(adapter_dir), Path(out_path), Path(base_gguf)
    dtypes = {"f32": np.float32, "f16": np.float16}
    if outtype not in dtypes:
        raise ValueError(f"outtype {outtype!r} is not supported; use one of {sorted(dtypes)}")
    config, state = _read_adapter(adapter_dir)
    hparams, base_shapes = _read_base(base_gguf)
    pairs = _pair_tensors(state)
    n_layer, n_embd = hparams["block_count"], hparams["embedding_length"]
    heads = {"q_proj": hparams["attention.head_count"], "k_proj": hparams["attention.head_count_kv"]}

    tensors: list[tuple[str, np.ndarray]] = []
    for (layer, module), pair in sorted(pairs.items()):
        if layer >= n_layer:
            raise ValueError(f"adapter has layer {layer} but the base GGUF {base_gguf.name} has {n_layer} "
                             "blocks; export against the base model the adapter was trained on")
        name = f"blk.{layer}.{GGUF_NAMES[module]}.weight"
        lora_a, lora_b = pair["A"].astype(np.float32), pair["B"].astype(np.float32)  # (r, in), (out, r)
        n_in, n_out = base_shapes.get(name, (None, None))
        if n_in is None:
            raise ValueError(f"base GGUF {base_gguf.name} has no tensor {name} for adapter module {module}")
        if lora_a.shape[1] != n_in or lora_b.shape[0] != n_out or lora_a.shape[0] != lora_b.shape[1]:
            raise ValueError(
                f"layer {layer} {module}: lora_A {lora_a.shape} and lora_B {lora_b.shape} do not fit the "
                f"base weight (out={n_out}, in={n_in}; embedding size {n_embd}); the adapter was trained "
                "on a different base model")
        if _permute_qk and module in heads:
            lora_b = permute_rope_rows(lora_b, heads[module])
        tensors += [(name + ".lora_a", lora_a), (name + ".lora_b", lora_b)]

    alpha = float(config.get("lora_alpha", config["r"]))
    if config.get("use_rslora"):  # PEFT scales by alpha / sqrt(r); llama.cpp by alpha / r
        alpha *= math.sqrt(config["r"])
    _write_gguf(out_path, tensors, alpha, dtypes[outtype])
    logger.info("wrote %d LoRA tensors (alpha %.3g) to %s", len(tensors), alpha, out_path)
    return out_path


def _write_gguf(out_path: Path, tensors: list[tuple[str, np.ndarray]], alpha: float, dtype: type) -> None:
    """Write adapter metadata and tensors to a temporary file, then rename it to `out_path`."""
    with atomic_path(out_path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for name, array in tensors:
            writer.add_tensor(name, np.ascontiguousarray(array.astype(dtype)))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
