"""MovieLens download: published checksum, atomic extraction and errors (urlopen faked, no network)."""

import hashlib
import io
import urllib.error
import urllib.request
import zipfile

import pytest

from cinephile.ratings import download
from cinephile.ratings.download import ensure_movielens
from cinephile.ratings.data import load_movielens
from tests.helpers import write_folder


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def zip_bytes(tmp_path) -> bytes:
    src = write_folder(tmp_path / "src" / download.ML_FOLDER)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"{download.ML_FOLDER}/{f.name}")
    return buf.getvalue()


def serve(monkeypatch, responses: dict):
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return FakeResponse(responses[url])
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_download_verifies_published_md5_and_keeps_readme(tmp_path, monkeypatch):
    data = zip_bytes(tmp_path)
    calls = serve(monkeypatch, {download.ML_MD5_URL: f"MD5 (ml-latest-small.zip) = {hashlib.md5(data).hexdigest()}\n".encode(),
                                download.ML_URL: data})
    dest = tmp_path / "data"
    folder = ensure_movielens(dest)
    assert folder == dest / download.ML_FOLDER and calls == [download.ML_MD5_URL, download.ML_URL]
    assert (folder / "README.txt").read_text() == "licence text"
    assert sorted(p.name for p in dest.iterdir()) == [download.ML_FOLDER]  # no temp files left
    assert len(load_movielens(folder).ratings) == 10
    assert ensure_movielens(dest) == folder and len(calls) == 2  # second call: no network


def test_download_checksum_mismatch_raises_and_leaves_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, {download.ML_URL: zip_bytes(tmp_path)})
    dest = tmp_path / "data"
    with pytest.raises(RuntimeError, match="Checksum mismatch .* expected 0{32}"):
        ensure_movielens(dest, md5="0" * 32)
    assert list(dest.iterdir()) == []


def test_offline_download_names_url_and_destination(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dest = tmp_path / "data"
    with pytest.raises(RuntimeError) as err:
        ensure_movielens(dest)
    assert download.ML_URL in str(err.value) and str(dest / download.ML_FOLDER) in str(err.value)
    assert "Name or service not known" in str(err.value)
    assert list(dest.iterdir()) == []


def test_published_md5_without_a_checksum_is_reported(tmp_path, monkeypatch):
    serve(monkeypatch, {download.ML_MD5_URL: b"<html>Not Found</html>", download.ML_URL: b""})
    with pytest.raises(RuntimeError, match=r"\.zip\.md5 holds no MD5 checksum; pass md5=\.\.\. to ensure_movielens"):
        ensure_movielens(tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_no_download_when_not_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    with pytest.raises(FileNotFoundError, match=f"No MovieLens files in .*{download.ML_URL}"):
        ensure_movielens(tmp_path, download=False)


def test_incomplete_folder_is_reported_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    write_folder(tmp_path / download.ML_FOLDER, tags=None)
    with pytest.raises(FileNotFoundError, match=r"exists but is missing tags\.csv; remove the folder"):
        ensure_movielens(tmp_path)


def test_a_download_that_is_not_a_zip_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    page = b"<html>Please log in to the network</html>"
    serve(monkeypatch, {download.ML_URL: page})
    dest = tmp_path / "data"
    with pytest.raises(RuntimeError, match="is not a zip archive .*captive portal"):
        ensure_movielens(dest, md5=hashlib.md5(page).hexdigest())
    assert list(dest.iterdir()) == []


def test_resolve_movielens_prefers_the_folder_then_alternatives(tmp_path, monkeypatch):
    shared = write_folder(tmp_path / "shared" / download.ML_FOLDER)
    assert download.resolve_movielens(tmp_path / "missing", alternatives=(tmp_path / "shared",)) == shared
    own = write_folder(tmp_path / "own")
    assert download.resolve_movielens(own, alternatives=(tmp_path / "shared",)) == own
    with pytest.raises(FileNotFoundError, match="No MovieLens files"):
        download.resolve_movielens(tmp_path / "none", download=False)
