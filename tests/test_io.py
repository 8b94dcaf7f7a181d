"""File I/O: JSONL round trips, atomic file and directory writes, permissions, stale temp files."""

import os

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cinephile.io import make_run_dir, read_jsonl, save_figure, save_json, write_jsonl
from lora.atomic import atomic_dir, atomic_write  # noqa: E402


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_jsonl_round_trip_keeps_unicode(tmp_path):
    recs = [{"id": "1", "question": "Qui a réalisé « Amélie » ?", "chunks": ["a", "b"]}, {"id": "2", "x": None}]
    path = tmp_path / "sub" / "out.jsonl"
    write_jsonl(path, recs)
    assert "Amélie" in path.read_text(encoding="utf-8")
    assert read_jsonl(path) == recs
    assert [p.name for p in path.parent.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_write_jsonl_is_atomic(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"id": 1}])
    with pytest.raises(TypeError):
        write_jsonl(path, [{"id": 2}, {"bad": object()}])
    assert read_jsonl(path) == [{"id": 1}]  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_read_jsonl_errors(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(ValueError, match=r"x.jsonl line 3: invalid JSON"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_jsonl(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------- movie selection


def test_files_get_the_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        for path in (write_jsonl(tmp_path / "a.jsonl", [{"x": 1}]), save_json(tmp_path / "b.json", {"x": 1})):
            assert path.stat().st_mode & 0o777 == 0o644
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
        assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)


def test_save_json_figure_and_run_dir(tmp_path):
    assert save_json(tmp_path / "m.json", {"path": tmp_path}).read_text().startswith("{")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    assert save_figure(fig, tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    plt.close(fig)
    assert make_run_dir("r1", root=tmp_path).is_dir()
    with pytest.raises(ValueError, match="plain folder name"):
        make_run_dir("../escape", root=tmp_path)
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with atomic_write(tmp_path / "z", "a"):
            pass


def test_read_json_round_trip_and_errors(tmp_path):
    from cinephile.io import read_json, save_json

    save_json(tmp_path / "r.json", {"rmse": 0.95, "path": tmp_path})
    assert read_json(tmp_path / "r.json") == {"rmse": 0.95, "path": str(tmp_path)}
    with pytest.raises(FileNotFoundError, match="missing.json not found; run the notebook"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: invalid JSON"):
        read_json(tmp_path / "bad.json")


@pytest.mark.parametrize("content, message", [
    (b'{"a": 1}\n{"a": "caf\xe9"}\n', r"x.jsonl line 2 is not UTF-8 .*save it as UTF-8"),
    (b'{"a": 1}\n3\n', r"x.jsonl line 2: expected a JSON object \(one record per line\), got int"),
    (b'{"a": 1}\n["a", 1]\n', r"x.jsonl line 2: expected a JSON object \(one record per line\), got list"),
    (b'{"a": 1}\n\n{"a": 2\n', r"x.jsonl line 3: invalid JSON"),
])
def test_read_jsonl_names_the_file_and_line_of_a_bad_record(tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_jsonl(path)


def test_read_jsonl_accepts_a_byte_order_mark_and_checks_required_keys(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes('{"a": "é"}\n{"a": 2, "b": 3}\n'.encode("utf-8-sig"))
    assert read_jsonl(path, required=("a",)) == [{"a": "é"}, {"a": 2, "b": 3}]
    path.write_text('{"a": 1}\n{"b": 2}\n')
    with pytest.raises(ValueError, match=r"bom.jsonl line 2: the record has no 'a' key; .*regenerate the file"):
        read_jsonl(path, required=("a",))


@pytest.mark.parametrize("name", ["..", ".", "", "../escape", "a/b", "a\\b", "/tmp/abs"])
def test_make_run_dir_refuses_anything_but_a_plain_folder_name(tmp_path, name):
    with pytest.raises(ValueError, match="must be a plain folder name"):
        make_run_dir(name, root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
