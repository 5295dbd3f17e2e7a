"""The manual override file (``input.prompts`` / ``--prompts``): boxes to add as persons, regions to exclude.

Automation still misses people (a distant figure in dark clothes) and finds some that are not there (a poster).
The prompts file lets a user fix both without touching the model, per source frame and eye::

    {"prompts": [
        {"frame": 120, "eye": "left", "add": [[410, 220, 436, 300]]},
        {"frame": 0, "to": 899, "eye": "both", "exclude": [[0, 0, 200, 150]]}
    ]}

* ``frame``: the source frame number (0 = the first decoded frame); ``to``: last frame (inclusive) an entry's
  ``exclude`` regions hold for (default: ``frame`` only). An ``add`` box acts on ``frame``: it starts a person
  there (or re-anchors the person already tracked in that box) who is then tracked on from that frame.
* ``eye``: ``left``, ``right`` or ``both``. A box given for one eye is carried to the other eye by the stereo
  stage (shifted by the person's measured disparity), so one box per person is enough.
* boxes: ``[x0, y0, x1, y1]`` in pixels of that eye of the source video (the eye's own origin: the right eye of a
  side-by-side frame starts at x = 0 too); the processing resolution is derived from them.

Every problem is a one-line :class:`~vr180matte.errors.ConfigError` (exit 2) naming the entry. The file's
content digest is part of the resume identity and of the batch ledger's identity (a changed file re-runs).
``{stem}`` in the path is replaced by the input's file stem, so one batch config can name a file per video.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["Prompts", "PromptEntry", "load_prompts", "prompts_path", "prompts_digest", "EYES"]

EYES = ("left", "right", "both")
_KEYS = {"frame", "to", "eye", "add", "exclude"}


@dataclass(frozen=True)
class PromptEntry:
    frame: int
    to: int
    eye: str
    add: tuple[tuple[float, float, float, float], ...] = ()
    exclude: tuple[tuple[float, float, float, float], ...] = ()

    def eyes(self) -> tuple[str, ...]:
        return ("left", "right") if self.eye == "both" else (self.eye,)


@dataclass
class Prompts:
    """The validated file. Boxes are in source-eye pixels (``eye_w`` x ``eye_h``); :meth:`adds` and
    :meth:`excludes` scale them to the image they are used on."""

    entries: list[PromptEntry]
    eye_w: int
    eye_h: int
    digest: str
    path: str = ""
    stats: dict = field(default_factory=lambda: {"added": 0, "excluded_frames": 0, "detections_excluded": 0})

    def _scale(self, box, shape) -> np.ndarray:
        h, w = int(shape[0]), int(shape[1])
        sx, sy = w / self.eye_w, h / self.eye_h
        return np.array([box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy], dtype=np.float32)

    def adds(self, frame: int, shape) -> list[tuple[str, np.ndarray]]:
        """``[(eye, box)]`` added on ``frame``, boxes scaled to an image of ``shape`` (H, W, ...)."""
        return [(e.eye, self._scale(b, shape)) for e in self.entries if e.frame == frame for b in e.add]

    def excludes(self, frame: int, eye: str, shape) -> list[np.ndarray]:
        """Excluded boxes of ``eye`` on ``frame``, scaled to an image of ``shape``."""
        return [self._scale(b, shape) for e in self.entries if e.frame <= frame <= e.to and eye in e.eyes()
                for b in e.exclude]

    def keep_mask(self, frame: int, eye: str, shape, device) -> torch.Tensor | None:
        """(H, W) float mask, 0 inside this frame's excluded regions of ``eye`` (None when there are none).
        Pixel ``(y, x)`` is excluded when its centre lies in a box, at any resolution."""
        boxes = self.excludes(frame, eye, shape)
        if not boxes:
            return None
        h, w = int(shape[0]), int(shape[1])
        keep = torch.ones((h, w), dtype=torch.float32, device=device)
        for b in boxes:
            x0, y0 = max(0, math.ceil(b[0] - 0.5)), max(0, math.ceil(b[1] - 0.5))
            x1, y1 = min(w, math.ceil(b[2] - 0.5)), min(h, math.ceil(b[3] - 0.5))
            if x1 > x0 and y1 > y0:
                keep[y0:y1, x0:x1] = 0.0
        return keep

    def excluded_fraction(self, frame: int, eye: str, box: np.ndarray, shape) -> float:
        """Share of ``box`` (same scale as ``shape``) lying in this frame's excluded regions of ``eye``."""
        area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6)
        inside = 0.0
        for b in self.excludes(frame, eye, shape):
            iw = max(0.0, min(box[2], b[2]) - max(box[0], b[0]))
            ih = max(0.0, min(box[3], b[3]) - max(box[1], b[1]))
            inside += iw * ih
        return min(1.0, inside / area)

    def has_excludes(self, frame: int) -> bool:
        return any(e.exclude and e.frame <= frame <= e.to for e in self.entries)


def prompts_path(value: str, stem: str | None = None) -> Path | None:
    """The prompts file named by ``input.prompts`` (``{stem}`` replaced), or None when it is empty."""
    if not value:
        return None
    return Path(str(value).replace("{stem}", stem or "")).expanduser()


def prompts_digest(value: str, stem: str | None = None) -> str:
    """Content digest of the prompts file ("" when none is set, "missing" when it cannot be read): a changed file
    changes the batch identity and the resume fingerprint, a renamed identical file does not."""
    path = prompts_path(value, stem)
    if path is None:
        return ""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


def _err(where: str, msg: str) -> ConfigError:
    return ConfigError(f"input.prompts {where}: {msg}")


def _box(raw, where: str, eye_w: int, eye_h: int) -> tuple[float, float, float, float]:
    if not isinstance(raw, (list, tuple)) or len(raw) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in raw):
        raise _err(where, f"a box is [x0, y0, x1, y1] (4 numbers in eye pixels), got {raw!r}")
    x0, y0, x1, y1 = (float(v) for v in raw)
    if not (x1 > x0 and y1 > y0):
        raise _err(where, f"box {raw!r} is empty: need x0 < x1 and y0 < y1")
    if x0 < 0 or y0 < 0 or x1 > eye_w or y1 > eye_h:
        raise _err(where, f"box {raw!r} is outside the {eye_w}x{eye_h} eye (coordinates are per eye, from 0)")
    return x0, y0, x1, y1


def _entry(raw, k: int, n_frames: int, eye_w: int, eye_h: int) -> PromptEntry:
    where = f"entry {k}"
    if not isinstance(raw, dict):
        raise _err(where, f"each entry is an object with frame, eye and add and/or exclude, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise _err(where, f"unknown key {unknown[0]!r} (keys: {', '.join(sorted(_KEYS))})")
    frame, to = raw.get("frame"), raw.get("to", raw.get("frame"))
    for name, v in (("frame", frame), ("to", to)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise _err(where, f"{name} must be a source frame number >= 0, got {v!r}")
        if n_frames > 0 and v >= n_frames:
            raise _err(where, f"{name} {v} is past the last frame of the video ({n_frames - 1})")
    if to < frame:
        raise _err(where, f"to {to} is before frame {frame}")
    eye = raw.get("eye", "both")
    if eye not in EYES:
        raise _err(where, f"eye must be one of {', '.join(EYES)}, got {eye!r}")
    lists = {}
    for name in ("add", "exclude"):
        boxes = raw.get(name, [])
        if not isinstance(boxes, list):
            raise _err(where, f"{name} must be a list of boxes, got {boxes!r}")
        lists[name] = tuple(_box(b, f"{where} {name}[{i}]", eye_w, eye_h) for i, b in enumerate(boxes))
    if not lists["add"] and not lists["exclude"]:
        raise _err(where, "has neither add nor exclude boxes")
    return PromptEntry(frame, to, eye, lists["add"], lists["exclude"])


def load_prompts(value: str, stem: str | None, n_frames: int, eye_w: int, eye_h: int) -> Prompts | None:
    """Read and validate the prompts file (None when ``input.prompts`` is empty); one-line ConfigError on any
    problem. ``n_frames`` <= 0 skips the frame-range check (frame count unknown)."""
    path = prompts_path(value, stem)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"input.prompts {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"input.prompts {path}: not valid JSON ({exc})") from None
    raw = doc.get("prompts") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and set(doc) - {"prompts", "version"}:
        raise ConfigError(f"input.prompts {path}: unknown top-level key {sorted(set(doc) - {'prompts', 'version'})[0]!r}"
                          " (expected {\"prompts\": [...]})")
    if not isinstance(raw, list):
        raise ConfigError(f"input.prompts {path}: expected {{\"prompts\": [entries]}} or a list of entries")
    try:
        entries = [_entry(e, k, n_frames, eye_w, eye_h) for k, e in enumerate(raw)]
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("input.prompts ", f"input.prompts {path.name} ", 1)) from None
    return Prompts(entries, int(eye_w), int(eye_h), hashlib.sha256(data).hexdigest()[:16], str(path))
