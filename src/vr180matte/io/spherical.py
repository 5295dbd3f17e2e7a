"""VR180 / 360 spherical and stereo metadata in MP4/MOV files (Google Spherical Video V1 and V2).

Why a box parser of our own: PyAV 18.1 exposes no stream-level side data (``VideoStream`` has no
``side_data``; only ``set_display_matrix``), and FFmpeg's mov muxer writes ``st3d``/``sv3d`` only from
stream side data that PyAV cannot set. Frames decoded from a tagged file do carry ``STEREO3D`` /
``SPHERICAL`` side data in FFmpeg 8, but reading them means decoding a frame; the boxes are cheaper
and exact. So we read the ``moov`` box (seeking over ``mdat``, so multi-GB files cost one small read)
and write the boxes ourselves.

Layout (Spherical Video V2 RFC, google/spatial-media ``docs/spherical-video-v2-rfc.md``)::

    moov/trak/mdia/minf/stbl/stsd/<avc1|hvc1|hev1|ap4h|apch|...>   visual sample entry
        st3d   FullBox: uint8 stereo_mode (0 mono, 1 top-bottom, 2 left-right, 3 custom, 4 right-left)
        sv3d   Box
            svhd   FullBox: null-terminated UTF-8 metadata_source
            proj   Box
                prhd   FullBox: int32 yaw, pitch, roll (16.16 fixed, degrees)
                equi   FullBox: uint32 bounds top, bottom, left, right (0.32 fixed fractions cropped)

VR180 equirectangular = left and right bounds 0x40000000 (a quarter of the sphere cropped on each side).
V1 is a ``uuid`` box (ffcc8263-f855-4a93-8814-587a02521fdd) in the video ``trak`` holding RDF/XML with
``GSpherical:*`` elements; we read it but always write V2, which is what YouTube and headsets read.

The box tree (parsing, serializing, chunk offsets) is :mod:`vr180matte.io.mp4_boxes`; the fisheye ``mshp`` mesh
is :mod:`vr180matte.io.spherical_mesh`. This module knows what the boxes mean.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# the box tree (io/mp4_boxes.py) and the fisheye mesh (io/spherical_mesh.py) lived here; their names, under the
# ones they had here, stay importable from this module
from vr180matte.io.mp4_boxes import _CONTAINERS, _VISUAL_ENTRY_FIELDS  # noqa: F401
from vr180matte.io.mp4_boxes import Box as _Box
from vr180matte.io.mp4_boxes import _parse_children, _parse_sample_entry  # noqa: F401
from vr180matte.io.mp4_boxes import chunk_offset_boxes as _chunk_offset_boxes
from vr180matte.io.mp4_boxes import full_box as _full_box
from vr180matte.io.mp4_boxes import handler as _handler
from vr180matte.io.mp4_boxes import iter_boxes as _iter_boxes  # noqa: F401
from vr180matte.io.mp4_boxes import load_moov as _load_moov
from vr180matte.io.mp4_boxes import parse_box as _parse  # noqa: F401
from vr180matte.io.mp4_boxes import top_level as _top_level  # noqa: F401
from vr180matte.io.mp4_boxes import video_entry as _video_entry
from vr180matte.io.spherical_mesh import _Bits, _mesh_box, _unzigzag, _zigzag  # noqa: F401
from vr180matte.io.spherical_mesh import fisheye_mesh, mshp_payload, read_mesh  # noqa: F401

log = logging.getLogger(__name__)

STEREO_MODES = {0: "mono", 1: "top-bottom", 2: "left-right", 3: "custom", 4: "right-left"}
STEREO_CODES = {"mono": 0, "top-bottom": 1, "left-right": 2}
V1_UUID = bytes.fromhex("ffcc8263f8554a938812587a02521fdd")
METADATA_SOURCE = "vr180matte"

# Optional boxes that the RFC says must stay *after* st3d/sv3d at the end of a sample entry.
_TRAILING_OPTIONAL = {b"clap", b"pasp"}
_FULL_CIRCLE = 1 << 32


class SphericalError(ValueError):
    """A file whose box structure we cannot safely rewrite; the message says what to do."""


@dataclass
class SphericalMeta:
    """What a player needs to render the video: stereo packing, projection, horizontal field of view.

    ``stereo`` is "left-right", "top-bottom" or "mono" (rare files may also say "right-left" or
    "custom"); ``projection`` is "equirectangular", "cubemap", "mesh" or None (st3d without sv3d);
    ``fov_deg`` is the horizontal field of view from the equi bounds (180.0 VR180, 360.0 full sphere),
    None when not equirectangular; ``source`` is "v2" or "v1" for MP4/MOV boxes, "ffmpeg" for other
    containers (MKV/WebM StereoMode/Projection as FFmpeg reports them).
    """

    stereo: str
    projection: str | None
    fov_deg: float | None
    source: str


# -------------------------------------------------------------------------------------------- reading


def _read_v2(entry: _Box) -> SphericalMeta | None:
    st3d = entry.find(b"st3d")
    sv3d = entry.find(b"sv3d")
    if st3d is None and sv3d is None:
        return None
    stereo = "mono"
    if st3d is not None and len(st3d.payload) >= 5:
        stereo = STEREO_MODES.get(st3d.payload[4], f"unknown-{st3d.payload[4]}")
    projection = fov = None
    proj = sv3d.find(b"proj") if sv3d is not None and sv3d.children is not None else None
    if proj is not None:
        equi = proj.find(b"equi")
        if equi is not None and len(equi.payload) >= 20:
            projection = "equirectangular"
            _top, _bottom, left, right = struct.unpack_from(">4I", equi.payload, 4)
            fov = round(360.0 * (1.0 - (left + right) / _FULL_CIRCLE), 3)
        elif proj.find(b"cbmp") is not None:
            projection = "cubemap"
        elif proj.find(b"mshp") is not None:
            projection = "mesh"
    return SphericalMeta(stereo=stereo, projection=projection, fov_deg=fov, source="v2")


def _xml_value(xml: str, name: str) -> str | None:
    match = re.search(rf"<(?:\w+:)?{name}>\s*([^<]*?)\s*</(?:\w+:)?{name}>", xml)
    return match.group(1) if match else None


def _read_v1(trak: _Box) -> SphericalMeta | None:
    for child in trak.children or ():
        if child.type == b"uuid" and child.payload[:16] == V1_UUID:
            xml = child.payload[16:].decode("utf-8", errors="replace")
            if (_xml_value(xml, "Spherical") or "").lower() != "true":
                continue
            stereo = (_xml_value(xml, "StereoMode") or "mono").lower()
            projection = (_xml_value(xml, "ProjectionType") or "equirectangular").lower()
            fov = 360.0 if projection == "equirectangular" else None
            crop_w, full_w = _xml_value(xml, "CroppedAreaImageWidthPixels"), _xml_value(xml, "FullPanoWidthPixels")
            if fov is not None and crop_w and full_w:
                try:
                    fov = round(360.0 * int(crop_w) / int(full_w), 3)
                except (ValueError, ZeroDivisionError):
                    pass
            return SphericalMeta(stereo=stereo, projection=projection, fov_deg=fov, source="v1")
    return None


# FFmpeg's AVStereo3D.type and AVSphericalMapping.projection enums (libavutil stereo3d.h, spherical.h).
_AV_STEREO = {0: "mono", 1: "left-right", 2: "top-bottom"}
_AV_EQUIRECT, _AV_CUBEMAP, _AV_EQUIRECT_TILE, _AV_HALF_EQUIRECT = 0, 1, 2, 3


def _read_ffmpeg(path: Path) -> SphericalMeta | None:
    """Containers other than MP4/MOV (MKV/WebM StereoMode and Projection): ask FFmpeg.

    PyAV 18.1 has no stream-level side data, so this decodes the first frame and reads the STEREO3D /
    SPHERICAL frame side data FFmpeg derives from the container. Anything PyAV cannot open gives None.
    """
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            frame = next(container.decode(video=0), None)
            if frame is None:
                return None
            side = {sd.type.name: bytes(sd) for sd in frame.side_data}
    except Exception as exc:  # noqa: BLE001 - any unreadable file simply has no metadata we can use
        log.debug("spherical: FFmpeg cannot read %s: %s", path, exc)
        return None
    st3d, sph = side.get("STEREO3D"), side.get("SPHERICAL")
    if st3d is None and sph is None:
        return None
    stereo = "mono"
    if st3d is not None and len(st3d) >= 8:
        kind, flags = struct.unpack_from("<iI", st3d)
        stereo = _AV_STEREO.get(kind, f"unknown-{kind}")
        if kind == 1 and flags & 1:  # AV_STEREO3D_FLAG_INVERT: right view first
            stereo = "right-left"
    projection = fov = None
    if sph is not None and len(sph) >= 32:
        proj = struct.unpack_from("<I", sph)[0]
        left, _top, right, _bottom = struct.unpack_from("<4I", sph, 16)
        if proj in (_AV_EQUIRECT, _AV_EQUIRECT_TILE):
            projection, fov = "equirectangular", round(360.0 * (1.0 - (left + right) / _FULL_CIRCLE), 3)
        elif proj == _AV_HALF_EQUIRECT:
            projection, fov = "equirectangular", 180.0
        elif proj == _AV_CUBEMAP:
            projection = "cubemap"
    return SphericalMeta(stereo=stereo, projection=projection, fov_deg=fov, source="ffmpeg")


def read_spherical(path: str | Path) -> SphericalMeta | None:
    """Spherical/stereo metadata of the first video track that has any (V2 preferred over V1), else None.

    Reads only box headers and the ``moov`` box. Files that are not MP4/MOV (MKV, WebM) are asked of
    FFmpeg instead (``source="ffmpeg"``, one frame decoded). Malformed or non-video files give None
    (with a debug log) rather than an exception: missing metadata is the normal case and the caller
    falls back to its configured layout. A missing file raises FileNotFoundError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        _, moov = _load_moov(path)
    except (OSError, struct.error, ValueError) as exc:  # unreadable structure: treat as untagged
        log.debug("spherical: cannot parse %s: %s", path, exc)
        return None
    if moov is None:
        return _read_ffmpeg(path)
    v1 = None
    for trak in moov.children or ():
        if trak.type != b"trak" or _handler(trak) != b"vide":
            continue
        entry = _video_entry(trak)
        meta = _read_v2(entry) if entry is not None else None
        if meta is not None:
            return meta
        v1 = v1 or _read_v1(trak)
    return v1


# -------------------------------------------------------------------------------------------- writing


def _v2_boxes(stereo: str, projection: str | None, fov_deg: float) -> list[_Box]:
    boxes = [_full_box(b"st3d", bytes([STEREO_CODES[stereo]]))]
    if projection == "fisheye":
        svhd = _full_box(b"svhd", METADATA_SOURCE.encode() + b"\x00")
        prhd = _full_box(b"prhd", struct.pack(">3i", 0, 0, 0))
        mshp = _Box(b"mshp", payload=mshp_payload(fov_deg))
        boxes.append(_Box(b"sv3d", children=[svhd, _Box(b"proj", children=[prhd, mshp])]))
    if projection == "equirectangular":
        crop = round((360.0 - fov_deg) / 360.0 / 2.0 * _FULL_CIRCLE)
        crop = max(0, min(crop, 0x7FFFFFFF))
        svhd = _full_box(b"svhd", METADATA_SOURCE.encode() + b"\x00")
        prhd = _full_box(b"prhd", struct.pack(">3i", 0, 0, 0))
        equi = _full_box(b"equi", struct.pack(">4I", 0, 0, crop, crop))
        proj = _Box(b"proj", children=[prhd, equi])
        boxes.append(_Box(b"sv3d", children=[svhd, proj]))
    return boxes


def _shift_chunk_offsets(moov: _Box, threshold: int, delta: int) -> int:
    """Add ``delta`` to every chunk offset at or past ``threshold`` (media that moved); returns count."""
    moved = 0
    for box in _chunk_offset_boxes(moov):
        wide = box.type == b"co64"
        count = struct.unpack_from(">I", box.payload, 4)[0]
        fmt = f">{count}{'Q' if wide else 'I'}"
        offsets = list(struct.unpack_from(fmt, box.payload, 8))
        limit = 0xFFFFFFFFFFFFFFFF if wide else 0xFFFFFFFF
        for i, off in enumerate(offsets):
            if off >= threshold:
                offsets[i] = off + delta
                moved += 1
                if offsets[i] > limit:
                    raise SphericalError(
                        "chunk offsets would pass 4 GiB in a 32-bit stco table; write the file without "
                        "faststart (moov at the end) and inject the metadata again"
                    )
        box.payload = box.payload[:8] + struct.pack(fmt, *offsets) + box.payload[8 + struct.calcsize(fmt) :]
    return moved


def write_spherical(
    path: str | Path,
    stereo: str = "left-right",
    projection: str | None = "equirectangular",
    fov_deg: float = 180.0,
    *,
    in_place: bool = False,
) -> None:
    """Tag an MP4/MOV in place with Spherical Video V2 (st3d + sv3d) in its first video sample entry.

    Existing st3d/sv3d in that entry are replaced, never duplicated. The moov box grows by the boxes'
    size, so when moov precedes the media (faststart) every stco/co64 offset that points past moov is
    shifted; box sizes up the chain are recomputed on serialization. ``projection=None`` writes st3d
    only. The new file is written next to the original and moved over it with ``os.replace`` so a
    crash never leaves a half-written video. Fragmented MP4 is refused (its offsets live in moofs).
    ``in_place=True`` (for a temporary file the caller renames afterwards) rewrites only the tail when moov is
    the file's last box, so finalizing a huge output costs no second copy.
    """
    path = Path(path)
    if stereo not in STEREO_CODES:
        raise SphericalError(f"stereo must be one of {sorted(STEREO_CODES)}, got {stereo!r}")
    if projection not in ("equirectangular", "fisheye", None):
        raise SphericalError(f"projection must be 'equirectangular', 'fisheye' or None, got {projection!r}")
    if projection is not None and not 0.0 < float(fov_deg) <= 360.0:
        raise SphericalError(f"fov_deg must be in (0, 360], got {fov_deg}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")

    boxes, moov = _load_moov(path)
    if moov is None:
        raise SphericalError(f"{path}: not an MP4/MOV file with a moov box; cannot add VR180 metadata")
    if any(kind == b"moof" for kind, *_ in boxes):
        raise SphericalError(f"{path}: fragmented MP4 is not supported for metadata injection; write a plain MP4")
    entry = next((e for t in moov.children or () if t.type == b"trak" for e in [_video_entry(t)] if e), None)
    if entry is None:
        raise SphericalError(f"{path}: no video track with a visual sample entry; cannot add VR180 metadata")

    kept = [c for c in entry.children if c.type not in (b"st3d", b"sv3d")]
    at = next((i for i, c in enumerate(kept) if c.type in _TRAILING_OPTIONAL), len(kept))
    entry.children = kept[:at] + _v2_boxes(stereo, projection, float(fov_deg)) + kept[at:]

    _, moov_start, _, moov_size = next(b for b in boxes if b[0] == b"moov")
    moov_end = moov_start + moov_size
    new_moov = moov.serialize()
    delta = len(new_moov) - moov_size
    if delta:
        moved = _shift_chunk_offsets(moov, moov_end, delta)
        new_moov = moov.serialize()  # same length: only offset values changed
        log.debug("spherical: moov grew %d bytes, shifted %d chunk offsets", delta, moved)

    if in_place and moov_end == path.stat().st_size:
        # moov is the last box (PyAV's default layout): rewrite just the tail instead of copying a file that can
        # be hundreds of GB at 6K ProRes. Only for files not yet under their final name (the caller renames).
        with open(path, "r+b") as f:
            f.seek(moov_start)
            f.write(new_moov)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        log.info("spherical: wrote V2 metadata (%s, %s, %s deg) in place to %s", stereo, projection, fov_deg, path.name)
        return
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            _copy_range(src, dst, 0, moov_start)
            dst.write(new_moov)
            src.seek(moov_end)
            shutil.copyfileobj(src, dst, 16 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copymode(path, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    log.info("spherical: wrote V2 metadata (%s, %s, %s deg) to %s", stereo, projection, fov_deg, path.name)


def _copy_range(src: BinaryIO, dst: BinaryIO, start: int, length: int) -> None:
    src.seek(start)
    remaining = length
    while remaining > 0:
        block = src.read(min(remaining, 16 << 20))
        if not block:
            raise SphericalError("file shrank while copying; retry when nothing else writes to it")
        dst.write(block)
        remaining -= len(block)
