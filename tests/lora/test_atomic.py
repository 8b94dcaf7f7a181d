"""Replacing an adapter survives a failure or a kill at every file operation; written files are readable."""

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from lora import adapter_state_dict, atomic, inject_lora, load_adapter, save_adapter, save_lora_weights
from lora.atomic import atomic_dir, atomic_write, clean_stale_tmp
from lora.io import CONFIG_NAME, WEIGHTS_NAME
from tests.helpers import build, randomize_adapters

# Every file operation the directory writer performs (rmtree also counts its inner unlink / rmdir).
FILE_OPS = [(os, "mkdir"), (os, "chmod"), (os, "fsync"), (os, "rename"), (os, "replace"), (os, "unlink"),
            (os, "rmdir"), (shutil, "rmtree"), (atomic, "exchange")]
KILLED = 17  # exit code of a child killed in the middle of a save


def _dead_pid() -> int:
    """The pid of a process that has exited (a killed writer)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _arm(mp: pytest.MonkeyPatch, n: int, action) -> list[int]:
    """Make the n-th file operation run ``action()`` first (raise, or end the process); count the calls."""
    calls = [0]
    for owner, name in FILE_OPS:
        def op(*args, _real=getattr(owner, name), **kwargs):
            calls[0] += 1
            if calls[0] == n:
                action()
            return _real(*args, **kwargs)
        mp.setattr(owner, name, op)
    return calls


@pytest.fixture
def old_and_new():
    """Two adapters of the same base that differ in every weight and in lora_alpha (8 vs 16)."""
    old, cfg = build("llama")
    inject_lora(old, cfg)
    randomize_adapters(old, seed=1)
    new, _ = build("llama")
    inject_lora(new, cfg)
    randomize_adapters(new, seed=2)
    new.lora_config = replace(cfg, alpha=16.0)
    return old, new


def _which(path, old, new) -> str:
    """Load ``path`` into a fresh model: "old" or "new" when it is wholly one of them, else fail."""
    fresh, _ = build("llama")
    load_adapter(fresh, path)
    state, alpha = adapter_state_dict(fresh), fresh.lora_config.alpha
    for label, model in (("old", old), ("new", new)):
        ref = adapter_state_dict(model)
        if all(torch.equal(state[k], ref[k]) for k in ref):
            assert alpha == model.lora_config.alpha, f"{label} weights next to the other adapter's config"
            return label
    raise AssertionError("the loaded weights are neither the old adapter's nor the new one's")


@pytest.fixture(params=["exchange", "rename_fallback"])
def swap_mode(request, monkeypatch, tmp_path):
    """Run with the one-step exchange (skipped where this filesystem lacks it) or force the fallback."""
    if request.param == "rename_fallback":
        monkeypatch.setattr(atomic, "_RENAMEAT2", None)
    else:
        (tmp_path / "x").mkdir()
        (tmp_path / "y").mkdir()
        if not atomic.exchange(tmp_path / "x", tmp_path / "y"):
            pytest.skip("no RENAME_EXCHANGE on this OS / filesystem")
        (tmp_path / "x").rmdir()
        (tmp_path / "y").rmdir()
    return request.param


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk_full", "interrupt"])
def test_a_save_failing_at_any_file_operation_leaves_the_old_or_the_new_adapter(tmp_path, old_and_new,
                                                                                  swap_mode, error):
    old, new = old_and_new
    path = tmp_path / "a"
    outcomes, n = [], 1

    def fail():
        raise error
    while True:
        save_adapter(old, path)  # each round replaces the old adapter
        with pytest.MonkeyPatch.context() as mp:
            calls = _arm(mp, n, fail)
            try:
                save_adapter(new, path)
                failed = False
            except (OSError, KeyboardInterrupt) as err:
                assert err is error
                failed = True
        outcomes.append(_which(path, old, new))
        if not failed:
            assert outcomes[-1] == "new"
        if calls[0] < n:  # the save finished without reaching operation n: every step was covered
            break
        n += 1
    assert "old" in outcomes and "new" in outcomes and n > 5


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked writer")
def test_a_save_killed_at_any_file_operation_leaves_the_old_or_the_new_adapter(tmp_path, old_and_new, swap_mode):
    old, new = old_and_new
    path = tmp_path / "a"
    outcomes, missing_seen, n = [], False, 1
    while True:
        save_adapter(old, path)  # also cleans what the previous killed writer left beside it
        pid = os.fork()
        if pid == 0:  # the writer: dies at its n-th file operation, running no cleanup at all
            status = 1  # an unexpected error in the writer
            try:
                with pytest.MonkeyPatch.context() as mp:
                    _arm(mp, n, lambda: os._exit(KILLED))
                    save_adapter(new, path)
                status = 0
            finally:
                os._exit(status)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        assert code in (0, KILLED)
        missing_seen |= not path.exists()
        with pytest.MonkeyPatch.context() as mp:  # the next save fails too (disk full): nothing may be lost
            mp.setattr("lora.io.save_file", _disk_full)
            with pytest.raises(OSError, match="No space left"):
                save_adapter(new, path)
        outcomes.append(_which(path, old, new))  # an adapter left aside is restored, not deleted
        if code == 0:
            assert outcomes[-1] == "new"
            break
        n += 1
    assert "old" in outcomes and "new" in outcomes and n > 5
    # only the rename fallback has an instant without the path; the exchange never does
    assert missing_seen == (swap_mode == "rename_fallback")
    save_adapter(old, path)
    assert os.listdir(tmp_path) == ["a"]  # leftovers of the killed writers are gone


# ---------------------------------------------------------------- permissions

def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_written_files_and_folders_get_the_umask_permissions(tmp_path, umask, file_mode, dir_mode):
    model, cfg = build("llama")
    inject_lora(model, cfg)
    old = os.umask(umask)
    try:
        save_adapter(model, tmp_path / "a")
        save_adapter(model, tmp_path / "a")  # replacing keeps them too
        save_lora_weights(model, tmp_path / "w.pth")
    finally:
        os.umask(old)
    assert {name: _mode(tmp_path / "a" / name) for name in (WEIGHTS_NAME, CONFIG_NAME)} == \
        {WEIGHTS_NAME: file_mode, CONFIG_NAME: file_mode}
    assert _mode(tmp_path / "a") == dir_mode
    assert _mode(tmp_path / "w.pth") == file_mode


def test_stale_temp_files_of_killed_writers_are_cleaned_on_the_next_write(tmp_path):
    target = tmp_path / "out.json"
    stale = tmp_path / f".out.json.{_dead_pid()}-dead.tmp"
    stale.write_text("half written")
    stale_dir = tmp_path / f".out.json.{_dead_pid()}-dead2.tmp"
    stale_dir.mkdir()
    live = tmp_path / f".out.json.{os.getppid()}-live.tmp"  # a running writer's file is kept
    live.write_text("in progress")
    other = tmp_path / f".other.json.{_dead_pid()}-x.tmp"  # another target's file is not ours to clean
    other.write_text("x")
    with atomic_write(target) as f:
        f.write('{"ok": true}')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "out.json"])
    assert clean_stale_tmp(tmp_path / "other.json") == 1


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("new")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_dir_replaces_a_directory_as_one_unit(tmp_path):
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("2")  # interrupted before b was written
            raise RuntimeError("killed")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a": "1", "b": "1"}
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("3")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a": "3"}
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
