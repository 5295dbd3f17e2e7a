"""The mesh projection of the fisheye passthrough file: Spherical Video V2's ``mshp`` box, written and read back.

Why a module of its own: an equirectangular file says its projection with four numbers (the ``equi`` bounds), but a
fisheye one carries a whole triangle mesh (vertices on the sphere, texture coordinates in the image circle),
packed as the RFC specifies: coordinates listed once, indices as zig-zag deltas in just enough bits, raw-deflated
and CRC-checked. That encoding is its own piece of work; :mod:`vr180matte.io.spherical` only puts the payload in
an ``sv3d/proj`` box.
"""
from __future__ import annotations

import math
import struct

import numpy as np


class _Bits:
    """Big-endian, most-significant-bit-first bit writer (the mesh box's packed fields)."""

    def __init__(self) -> None:
        self.value, self.n = 0, 0

    def put(self, v: int, bits: int) -> None:
        if v < 0 or v >= (1 << bits):
            raise ValueError(f"{v} does not fit in {bits} bits")
        self.value = (self.value << bits) | v
        self.n += bits

    def bytes(self) -> bytes:
        pad = -self.n % 8  # 0-7 padding bits to the next byte boundary
        return ((self.value << pad)).to_bytes((self.n + pad) // 8, "big") if self.n else b""


def _zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def _unzigzag(z: int) -> int:
    return z // 2 if z % 2 == 0 else -(z + 1) // 2


def fisheye_mesh(fov_deg: float, rings: int = 32, segments: int = 64) -> tuple[list[tuple[float, ...]], list[int]]:
    """Vertices (x, y, z, u, v) and triangle indices of an equidistant fisheye image circle of ``fov_deg``.

    Positions on the unit sphere in the RFC's OpenGL frame (-Z forward, +X right, +Y up); texture coordinates
    with the origin at the lower left: a point ``theta`` off the axis at angle ``phi`` sits at radius
    ``theta / (fov / 2)`` of the circle inscribed in the (eye's) frame. Triangles wind counter-clockwise as seen
    from the viewer at the centre.
    """
    half = math.radians(fov_deg) / 2.0
    verts: list[tuple[float, ...]] = [(0.0, 0.0, -1.0, 0.5, 0.5)]
    for i in range(1, rings + 1):
        r = i / rings
        t = r * half
        for j in range(segments):
            phi = 2.0 * math.pi * j / segments
            c, s = math.cos(phi), math.sin(phi)
            verts.append((math.sin(t) * c, math.sin(t) * s, -math.cos(t), 0.5 + 0.5 * r * c, 0.5 + 0.5 * r * s))

    def at(i: int, j: int) -> int:
        return 0 if i == 0 else 1 + (i - 1) * segments + j % segments

    tris: list[int] = []
    for j in range(segments):
        tris += [at(0, 0), at(1, j), at(1, j + 1)]
    for i in range(1, rings):
        for j in range(segments):
            tris += [at(i, j), at(i + 1, j), at(i + 1, j + 1), at(i, j), at(i + 1, j + 1), at(i, j + 1)]
    return verts, tris


def _mesh_box(verts: list[tuple[float, ...]], tris: list[int]) -> bytes:
    """A ``mesh`` box (Spherical Video V2 RFC): every coordinate listed once per vertex, indices as zig-zag deltas."""
    coords = [c for v in verts for c in v]
    ccsb = max(1, math.ceil(math.log2(len(coords) * 2)))
    vcsb = max(1, math.ceil(math.log2(len(verts) * 2)))
    out = struct.pack(">I", len(coords)) + struct.pack(f">{len(coords)}f", *coords) + struct.pack(">I", len(verts))
    bits, prev = _Bits(), [0] * 5
    for k in range(len(verts)):
        for c in range(5):
            idx = 5 * k + c
            bits.put(_zigzag(idx - prev[c]), ccsb)
            prev[c] = idx
    out += bits.bytes()
    out += struct.pack(">I", 1)  # one vertex list
    bits, prev_i = _Bits(), 0
    for idx in tris:
        bits.put(_zigzag(idx - prev_i), vcsb)
        prev_i = idx
    out += struct.pack(">BBI", 0, 0, len(tris)) + bits.bytes()  # texture 0 (this video), type 0 (triangles)
    return struct.pack(">I4s", len(out) + 8, b"mesh") + out


def mshp_payload(fov_deg: float) -> bytes:
    """The ``mshp`` FullBox body for a fisheye of ``fov_deg``: CRC32, 'dfl8' (raw deflate), one mesh (both eyes'
    texture coordinates follow from the st3d stereo mode, as the RFC specifies)."""
    import zlib

    verts, tris = fisheye_mesh(fov_deg)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no zlib header or checksum
    data = b"dfl8" + comp.compress(_mesh_box(verts, tris)) + comp.flush()
    return b"\x00\x00\x00\x00" + struct.pack(">I", zlib.crc32(data) & 0xFFFFFFFF) + data


def read_mesh(mshp: bytes) -> tuple[np.ndarray, list[np.ndarray]]:
    """Parse an ``mshp`` FullBox body (ours or a camera's): the first mesh's vertices (N, 5) and index lists."""
    import zlib

    # imported here, not at the top: vr180matte.io.spherical imports this module (and re-exports read_mesh)
    from vr180matte.io.spherical import SphericalError

    crc, enc = struct.unpack_from(">I4s", mshp, 4)
    if zlib.crc32(mshp[8:]) & 0xFFFFFFFF != crc:
        raise SphericalError("mshp CRC mismatch")
    body = mshp[12:]
    if enc == b"dfl8":
        body = zlib.decompress(body, -15)
    elif enc != b"raw ":
        raise SphericalError(f"unknown mesh encoding {enc!r}")
    size, kind = struct.unpack_from(">I4s", body, 0)
    if kind != b"mesh":
        raise SphericalError("mshp holds no mesh box")
    p = 8
    (ncoord,) = struct.unpack_from(">I", body, p)
    coords = np.frombuffer(body, ">f4", ncoord, p + 4).astype(np.float64)
    p += 4 + 4 * ncoord
    (nvert,) = struct.unpack_from(">I", body, p)
    p += 4
    ccsb = max(1, math.ceil(math.log2(ncoord * 2)))
    vcsb = max(1, math.ceil(math.log2(nvert * 2)))

    def read_bits(start: int, count: int, width: int) -> tuple[list[int], int]:
        nbytes = (count * width + 7) // 8
        v = int.from_bytes(body[start : start + nbytes], "big")
        total = nbytes * 8
        vals = [(v >> (total - (k + 1) * width)) & ((1 << width) - 1) for k in range(count)]
        return vals, start + nbytes

    raw, p = read_bits(p, nvert * 5, ccsb)
    idx, prev = np.zeros((nvert, 5), np.int64), [0] * 5
    for k in range(nvert):
        for c in range(5):
            prev[c] += _unzigzag(raw[5 * k + c])
            idx[k, c] = prev[c]
    verts = coords[idx]
    (nlists,) = struct.unpack_from(">I", body, p)
    p += 4
    lists = []
    for _ in range(nlists):
        _tex, _typ, count = struct.unpack_from(">BBI", body, p)
        raw, p = read_bits(p + 6, count, vcsb)
        lists.append(np.cumsum([_unzigzag(z) for z in raw]))
    return verts, lists
