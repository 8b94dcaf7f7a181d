"""The install files agree: conda_env.yml mirrors the pins of requirements.txt and requirements-dev.txt."""

import re

from tests.conftest import ROOT

PIN = re.compile(r"^\s*-?\s*([A-Za-z0-9_.-]+)==([^\s#]+)", re.M)


def _pins(text: str) -> dict[str, str]:
    return {name.lower(): version for name, version in PIN.findall(text)}


def test_conda_env_mirrors_the_requirement_files():
    req = _pins((ROOT / "requirements.txt").read_text()) | _pins((ROOT / "requirements-dev.txt").read_text())
    conda = _pins((ROOT / "conda_env.yml").read_text())
    assert req and conda == req


def test_torch_is_pinned_to_the_cpu_build_and_jupyterlab_is_a_runtime_requirement():
    runtime = _pins((ROOT / "requirements.txt").read_text())
    assert runtime["torch"] == "2.13.0"
    assert {"jupyterlab", "papermill", "ipykernel"} <= runtime.keys()


def test_llama_cpp_is_built_for_avx2_not_for_the_build_machine():
    """A native build enables ggml's AMX kernels, which segfault where the OS does not grant AMX's tile state."""
    for name in ("requirements-dev.txt", "conda_env.yml"):
        line = next(line for line in (ROOT / name).read_text().splitlines() if "llama-cpp-python==" in line)
        assert "--config-settings=cmake.define.GGML_NATIVE=OFF" in line, f"{name}: {line.strip()}"
