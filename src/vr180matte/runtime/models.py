"""Model weights registry: which checkpoint files the engines expect, where they live, how to fetch them.

Weights are never bundled and never fetched silently: a run that needs a missing file stops at once with a
one-line error that names the file, the official URL and the folder to put it in. ``vr180matte models``
lists them; ``vr180matte models download NAME`` fetches one (streamed to a ``.part`` file, checked, renamed),
with network timeouts so that a dead network fails quickly instead of hanging.

Checksums: only values confirmed against a published source are filled in; the others are ``None`` (the size
and a ``torch.load`` probe still catch truncated files). See docs/models.md.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import socket
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from vr180matte.engines.base import EngineError

log = logging.getLogger(__name__)

_SAM2_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_YOLO_BASE = "https://github.com/ultralytics/assets/releases/download/v8.2.0"


@dataclass(frozen=True)
class ModelFile:
    """One expected weights file."""

    name: str  # registry key, e.g. "sam2.1_hiera_tiny" (what config values name)
    filename: str  # file name in the models folder
    url: str  # official download location
    sha256: str | None  # None: no published checksum we could confirm
    size_bytes: int | None  # None: size not confirmed
    license: str
    used_by: str  # engine that needs it


def _yolo(name: str) -> ModelFile:
    return ModelFile(name, f"{name}.pt", f"{_YOLO_BASE}/{name}.pt", None, None, "AGPL-3.0 (Ultralytics)", "det-sam2, mobilesam (detector)")


def _sam2(name: str) -> ModelFile:
    return ModelFile(name, f"{name}.pt", f"{_SAM2_BASE}/{name}.pt", None, None, "Apache-2.0 (Meta SAM 2.1)", "det-sam2")


MODEL_FILES: dict[str, ModelFile] = {
    m.name: m
    for m in [
        _yolo("yolov8n"),
        _yolo("yolov8s"),
        _yolo("yolov8m"),
        _sam2("sam2.1_hiera_tiny"),
        _sam2("sam2.1_hiera_small"),
        _sam2("sam2.1_hiera_base_plus"),
        _sam2("sam2.1_hiera_large"),
        ModelFile(
            "mobile_sam",
            "mobile_sam.pt",
            "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            None,
            None,
            "Apache-2.0 (MobileSAM)",
            "mobilesam",
        ),
    ]
}


def models_dir(cfg_dir: str = "") -> Path:
    """The weights folder: ``cfg_dir`` (``models.dir``) if set, else ``$VR180MATTE_MODELS``, else the user cache."""
    if cfg_dir:
        return Path(cfg_dir).expanduser()
    env = os.environ.get("VR180MATTE_MODELS", "")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "vr180matte" / "models"


def _entry(name: str) -> ModelFile:
    key = name[:-3] if name.endswith(".pt") else name
    try:
        return MODEL_FILES[key]
    except KeyError:
        raise EngineError(f"unknown model '{name}': known models are {', '.join(MODEL_FILES)}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _looks_loadable(path: Path) -> str | None:
    """Why ``path`` is not a readable torch checkpoint (None when it looks fine).

    Both checkpoint families are torch zip archives; the zip central directory sits at the end of the file, so a
    truncated download fails ``zipfile`` at once, without unpickling gigabytes (or running any pickle code).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if not any(n.endswith("data.pkl") for n in names):
            return "not a torch checkpoint (no data.pkl inside)"
        return None
    except zipfile.BadZipFile:
        pass
    except OSError as exc:
        return str(exc)
    # Legacy (non-zip) torch files: fall back to a real load.
    try:
        import torch

        torch.load(path, map_location="cpu", weights_only=False)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'unreadable'}"


def verify_file(path: Path, entry: ModelFile) -> None:
    """Raise a one-line EngineError when ``path`` is truncated or corrupt."""
    how = f"delete it and download again from {entry.url} (or run `vr180matte models download {entry.name}`)"
    size = path.stat().st_size
    if entry.size_bytes is not None and size != entry.size_bytes:
        raise EngineError(f"corrupt weights {path}: {size} bytes, expected {entry.size_bytes}; {how}")
    if entry.sha256 is not None:
        got = _sha256(path)
        if got != entry.sha256:
            raise EngineError(f"corrupt weights {path}: sha256 {got[:12]}... does not match {entry.sha256[:12]}...; {how}")
        return
    why = _looks_loadable(path)
    if why is not None:
        raise EngineError(f"corrupt weights {path}: {why}; {how}")


def resolve_weights(name: str, cfg_dir: str = "") -> Path:
    """Path of the checked weights file ``name`` (registry key or file name) in the models folder."""
    entry = _entry(name)
    folder = models_dir(cfg_dir)
    path = folder / entry.filename
    if not path.is_file():
        raise EngineError(
            f"missing weights '{entry.filename}': download it from {entry.url} "
            f"(or run `vr180matte models download {entry.name}`) and put it in {folder}"
        )
    verify_file(path, entry)
    return path


def weights_present(name: str, cfg_dir: str = "") -> bool:
    """Whether ``name`` exists in the models folder (cheap: no checksum; used for ``matting.engine=auto``)."""
    entry = _entry(name)
    path = models_dir(cfg_dir) / entry.filename
    return path.is_file() and path.stat().st_size > 0


def download(
    name: str, cfg_dir: str = "", url: str | None = None, timeout: float = 30, quiet: bool = False
) -> Path:
    """Fetch ``name`` into the models folder and return its path.

    Streams to ``<file>.part`` (a crash never leaves a half file under the real name), checks the sha256 when
    the registry knows it, then renames. ``timeout`` bounds connecting and every read, so it cannot hang.
    """
    entry = _entry(name)
    src = url or entry.url
    folder = models_dir(cfg_dir)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / entry.filename
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    try:
        req = urllib.request.Request(src, headers={"User-Agent": "vr180matte"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            from tqdm import tqdm

            with open(part, "wb") as fh, tqdm(
                total=total, unit="B", unit_scale=True, desc=entry.filename, disable=quiet, file=sys.stderr
            ) as bar:
                got = 0
                for block in iter(lambda: resp.read(1 << 20), b""):
                    fh.write(block)
                    h.update(block)
                    got += len(block)
                    bar.update(len(block))
        if total is not None and got != total:
            raise EngineError(f"download of {entry.filename} from {src} stopped at {got} of {total} bytes; try again")
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise EngineError(f"cannot download {entry.filename} from {src}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise EngineError(
            f"cannot download {entry.filename} from {src}: {reason} (check the network, or download it by hand "
            f"and put it in {folder})"
        ) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    digest = h.hexdigest()
    if entry.sha256 is not None and digest != entry.sha256:
        part.unlink(missing_ok=True)
        raise EngineError(
            f"checksum mismatch for {entry.filename} from {src}: got sha256 {digest}, expected {entry.sha256}; "
            "nothing was kept, try again"
        )
    why = _looks_loadable(part) if entry.sha256 is None else None
    if why is not None:
        part.unlink(missing_ok=True)
        raise EngineError(f"downloaded {entry.filename} from {src} is not a usable checkpoint: {why}")
    os.replace(part, dest)
    log.info("downloaded %s (%d bytes, sha256 %s) to %s", entry.filename, dest.stat().st_size, digest, dest)
    return dest


def _fmt_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def models_command(args: list[str]) -> int:
    """``vr180matte models [list] [--dir D]`` and ``vr180matte models download NAME [--dir D] [--url U]``."""
    parser = argparse.ArgumentParser(prog="vr180matte models", description="list or download model weights")
    sub = parser.add_subparsers(dest="cmd")
    p_list = sub.add_parser("list", help="list expected weights and whether they are present")
    p_list.add_argument("--dir", default="", help="weights folder (default: models.dir / $VR180MATTE_MODELS / cache)")
    p_dl = sub.add_parser("download", help="download one weights file from its official URL")
    p_dl.add_argument("name", help=f"one of: {', '.join(MODEL_FILES)}")
    p_dl.add_argument("--dir", default="", help="weights folder")
    p_dl.add_argument("--url", default=None, help="download from this URL instead of the official one")
    p_dl.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    p_dl.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--dir", default="", help=argparse.SUPPRESS)
    try:
        ns = parser.parse_args(args)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    if ns.cmd == "download":
        try:
            path = download(ns.name, ns.dir, url=ns.url, timeout=ns.timeout, quiet=ns.quiet)
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"saved {path}")
        return 0
    folder = models_dir(ns.dir)
    print(f"models folder: {folder}")
    print(f"{'name':<24} {'file':<28} {'status':<8} {'size':>9}  used by / where to get it")
    for entry in MODEL_FILES.values():
        path = folder / entry.filename
        present = path.is_file()
        size = _fmt_size(path.stat().st_size) if present else "-"
        print(f"{entry.name:<24} {entry.filename:<28} {'present' if present else 'missing':<8} {size:>9}  "
              f"{entry.used_by}; {entry.url}")
    print(f"put files in {folder} (set models.dir or $VR180MATTE_MODELS to use another folder); "
          "`vr180matte models download NAME` fetches one")
    return 0
