"""The ISO BMFF (MP4/MOV) box tree that the spherical metadata lives in: read, navigated, and written back.

Why a module of its own: :mod:`vr180matte.io.spherical` reads and writes VR180 metadata, which is a few boxes deep
in the ``moov`` box; finding them and writing the file back byte for byte (everything we do not touch copied
verbatim, sizes recomputed) is generic box work that knows nothing of stereo or projections. Only the path from
``moov`` down to the visual sample entries is parsed into a tree; every other box stays raw bytes. The top level is
scanned by its headers alone (seeking over ``mdat``), so a multi-GB file costs one small read.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

# Boxes that only hold other boxes, on the way from moov down to the sample table.
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"sv3d", b"proj"}
# Bytes between a visual sample entry's header and its child boxes (ISO 14496-12 VisualSampleEntry and
# the QuickTime ImageDescription share this 78-byte layout).
_VISUAL_ENTRY_FIELDS = 78


@dataclass
class Box:
    """One parsed box. ``payload`` is the raw body for leaves; containers keep ``children`` instead,
    with ``prefix`` holding the bytes between the header and the first child (FullBox fields, sample
    entry fields) and ``suffix`` any trailing bytes that are not boxes (QuickTime zero terminators)."""

    type: bytes
    payload: bytes = b""
    children: list["Box"] | None = None
    prefix: bytes = b""
    suffix: bytes = b""
    extra: dict = field(default_factory=dict)

    def find(self, kind: bytes) -> "Box | None":
        for child in self.children or ():
            if child.type == kind:
                return child
        return None

    def body(self) -> bytes:
        if self.children is None:
            return self.payload
        return self.prefix + b"".join(c.serialize() for c in self.children) + self.suffix

    def serialize(self) -> bytes:
        body = self.body()
        if len(body) + 8 <= 0xFFFFFFFF:
            return struct.pack(">I4s", len(body) + 8, self.type) + body
        return struct.pack(">I4sQ", 1, self.type, len(body) + 16) + body


def iter_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, box_start, body_start, box_end) for each box in ``data[start:end]``; stops at trailing junk."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos, pos + header, pos + size
        pos += size


def parse_box(data: bytes, kind: bytes, body_start: int, box_end: int) -> Box:
    """Parse the path we care about into a tree; everything else stays raw bytes (copied verbatim)."""
    if kind == b"stsd":
        return _parse_children(data, kind, body_start, box_end, prefix_len=8, entry_level=True)
    if kind in _CONTAINERS:
        return _parse_children(data, kind, body_start, box_end, prefix_len=0)
    return Box(kind, payload=data[body_start:box_end])


def _parse_children(
    data: bytes, kind: bytes, body_start: int, box_end: int, prefix_len: int, entry_level: bool = False
) -> Box:
    box = Box(kind, children=[], prefix=data[body_start : body_start + prefix_len])
    pos = body_start + prefix_len
    for child_kind, c_start, c_body, c_end in iter_boxes(data, pos, box_end):
        if entry_level:
            box.children.append(_parse_sample_entry(data, child_kind, c_body, c_end))
        else:
            box.children.append(parse_box(data, child_kind, c_body, c_end))
        pos = c_end
    box.suffix = data[pos:box_end]
    return box


def _parse_sample_entry(data: bytes, kind: bytes, body_start: int, box_end: int) -> Box:
    """A sample entry; only visual ones (78 fixed bytes, then boxes) are opened up."""
    if box_end - body_start < _VISUAL_ENTRY_FIELDS:
        return Box(kind, payload=data[body_start:box_end])
    box = _parse_children(data, kind, body_start, box_end, prefix_len=_VISUAL_ENTRY_FIELDS)
    box.extra["visual"] = True
    return box


def handler(trak: Box) -> bytes | None:
    mdia = trak.find(b"mdia")
    hdlr = mdia.find(b"hdlr") if mdia else None
    if hdlr is None or len(hdlr.payload) < 12:
        return None
    return hdlr.payload[8:12]


def video_entry(trak: Box) -> Box | None:
    """The first sample entry of a video trak, when it has a visual layout with child boxes."""
    if handler(trak) != b"vide":
        return None
    node: Box | None = trak
    for kind in (b"mdia", b"minf", b"stbl", b"stsd"):
        node = node.find(kind) if node else None
    if node is None or not node.children:
        return None
    entry = node.children[0]
    return entry if entry.children is not None else None


def top_level(f: BinaryIO, file_size: int) -> list[tuple[bytes, int, int, int]]:
    """Top-level boxes as (type, start, header_len, size), reading only headers (seeks over mdat)."""
    boxes = []
    pos = 0
    while pos + 8 <= file_size:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            break
        size, kind = struct.unpack_from(">I4s", head)
        header = 8
        if size == 1:
            if len(head) < 16:
                break
            size = struct.unpack_from(">Q", head, 8)[0]
            header = 16
        elif size == 0:
            size = file_size - pos
        if size < header or not re.fullmatch(rb"[\x20-\x7e\xa9]{4}", kind):
            break  # not (or no longer) an ISO BMFF box stream
        boxes.append((kind, pos, header, min(size, file_size - pos)))
        pos += size
    return boxes


def load_moov(path: Path) -> tuple[list[tuple[bytes, int, int, int]], Box | None]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        boxes = top_level(f, size)
        for kind, start, header, length in boxes:
            if kind == b"moov":
                f.seek(start)
                data = f.read(length)
                return boxes, parse_box(data, b"moov", header, len(data))
    return boxes, None


def full_box(kind: bytes, body: bytes) -> Box:
    return Box(kind, payload=b"\x00\x00\x00\x00" + body)


def chunk_offset_boxes(moov: Box) -> Iterator[Box]:
    for trak in moov.children or ():
        if trak.type != b"trak":
            continue
        node: Box | None = trak
        for kind in (b"mdia", b"minf", b"stbl"):
            node = node.find(kind) if node else None
        for child in (node.children or ()) if node else ():
            if child.type in (b"stco", b"co64"):
                yield child
