"""Display-matrix rotation: phones, some cameras and editors store frames sideways plus a matrix that tells the
player to turn them.

vr180matte honours it by turning every decoded frame upright before anything else sees it (the stereo layout is a
property of the picture as shown: a side-by-side video stored rotated by 90 degrees has its eyes stacked in
storage), and writes the output upright with no matrix, so it lines up with the input as players and editors show
it. ``probe`` reports the width and height as displayed, and ``stats.json`` says what was done (``rotation``).

Convention (FFmpeg's, which PyAV's ``VideoFrame.rotation`` follows): ``rotation`` is the angle in degrees by which
the stored frame is turned counter-clockwise for display. Mirrored matrices (negative determinant) are refused:
they are rare and guessing their order of operations wrong would silently misalign the matte.
"""
from __future__ import annotations

import logging
import struct

import av
import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)


def _matrix(frame: av.VideoFrame) -> tuple[float, float, float, float] | None:
    """(a, b, c, d) of the frame's display matrix (16.16 fixed point), None without one."""
    try:
        for sd in frame.side_data:
            if "DISPLAYMATRIX" in str(getattr(sd, "type", "")):
                raw = bytes(sd)
                if len(raw) >= 36:
                    m = struct.unpack("<9i", raw[:36])
                    return m[0] / 65536, m[1] / 65536, m[3] / 65536, m[4] / 65536
    except Exception:  # noqa: BLE001 - side data API differences: treat as "no matrix"
        log.debug("cannot read the display matrix", exc_info=True)
    return None


def frame_rotation(frame: av.VideoFrame, path: str = "") -> int:
    """Counter-clockwise display rotation of ``frame`` in {0, 90, 180, 270}; InputError for mirrored/odd angles."""
    m = _matrix(frame)
    if m is None:
        return 0
    a, b, c, d = m
    if a * d - b * c < 0:
        raise InputError(
            f"{path}: its display matrix mirrors the picture, which vr180matte does not apply; re-export it "
            "upright (e.g. ffmpeg -i IN -c:a copy OUT.mp4 applies the matrix)"
        )
    deg = float(getattr(frame, "rotation", 0) or 0) % 360
    turns = round(deg / 90) % 4
    if abs(deg - 90 * round(deg / 90)) > 1.0:
        raise InputError(
            f"{path}: its display matrix rotates by {deg:.1f} degrees, not a multiple of 90; re-export it upright "
            "(e.g. ffmpeg -i IN -c:a copy OUT.mp4 applies the matrix)"
        )
    return 90 * turns


def probe_rotation(container: av.container.InputContainer, stream, path: str = "") -> int:
    """Display rotation of ``stream``, read from its first decoded frame (seeks back to the start afterwards)."""
    try:
        container.seek(0, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            return frame_rotation(frame, path)
    except InputError:
        raise
    except av.error.FFmpegError:
        log.debug("could not decode a frame of %s to read its display matrix", path, exc_info=True)
    return 0


def displayed_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """(width, height) as shown after a ``rotation``-degree turn."""
    return (height, width) if rotation in (90, 270) else (width, height)


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """``rgb`` (H, W, C) turned counter-clockwise by ``rotation`` degrees, contiguous (a copy when turned)."""
    if not rotation:
        return rgb
    return np.ascontiguousarray(np.rot90(rgb, k=rotation // 90, axes=(0, 1)))


def rotation_report(rotation: int) -> dict:
    """The ``rotation`` block of stats.json."""
    if not rotation:
        return {"input_deg": 0, "applied": "none (no display rotation)"}
    return {
        "input_deg": rotation,
        "applied": "frames turned upright before processing; the output is written upright without a display matrix",
    }
