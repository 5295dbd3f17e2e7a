"""The encoder's planes built straight from the composited RGB(A) frame (or the decoded colour and the alpha
plane apart, io/picture.py), into a reused ``VideoFrame``.

Why: at 6144x3072 ``av.VideoFrame.from_ndarray`` (a full copy into a new frame) plus swscale's single-threaded
RGBA -> ``yuva444p10le`` conversion cost ~94 ms + the conversion per frame on the H200 machine (issue 20), and a
fresh 151 MB frame per picture is allocator churn. Here the conversion is numpy arithmetic on horizontal strips
(temporaries of a strip, never float copies of the whole frame), written into the planes of one frame per encoder
context that is reused (``make_writable`` first: if the encoder still holds the previous picture, FFmpeg gives a
fresh buffer instead of letting us overwrite it). numpy releases the GIL, so parallel encoder contexts
(:mod:`vr180matte.io.parallel_encode`) convert side by side.

Closeness to swscale (FFmpeg 8.1, tested in tests/io/test_planes.py): alpha is bit-exact (8-bit ``a`` is
widened to 16 bits as ``a * 257`` and rounded to 10 bits, which is what swscale does); Y, U and V are within one
10-bit code of swscale's (limited range, the tagged or BT.601 default matrix), computed as the exact matrix
product at 16 bits, rounded to 16 then to 10 bits. Only ``yuva444p10le`` (ProRes 4444) is built here; 4:2:0
(H.264/HEVC greenscreen) and PNG keep the swscale path.
"""
from __future__ import annotations

import av
import numpy as np

from vr180matte.io.picture import RgbAlpha

PIX_FMT = "yuva444p10le"
#: swscale colour matrix (SWS_CS_*, as io/writer.py maps the input's tag) -> (Kr, Kb)
KR_KB = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 7: (0.212, 0.087), 9: (0.2627, 0.0593)}
SWS_CS_DEFAULT = 5  # swscale's matrix for untagged video: BT.601
STRIP_ROWS = 64  # rows per strip: float32 temporaries of 64 x 6144 (1.5 MB each), cache-sized, not frame-sized


#: 8-bit alpha -> 10 bits as swscale does it: widened to 16 bits by replication (a * 257), rounded to 10 bits
_ALPHA8 = np.minimum((np.arange(256, dtype=np.uint32) * 257 + 32) >> 6, 1023).astype(np.uint16)


def supports(pix_fmt: str, image: np.ndarray | RgbAlpha) -> bool:
    if isinstance(image, RgbAlpha):
        return pix_fmt == PIX_FMT and image.dtype in (np.uint8, np.uint16)
    return pix_fmt == PIX_FMT and image.ndim == 3 and image.shape[2] in (3, 4) and image.dtype in (np.uint8,
                                                                                                   np.uint16)


def _plane(p) -> np.ndarray:
    """A writable (H, W) uint16 view of a 10/16-bit plane (rows padded to ``line_size``)."""
    return np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, : p.width]


class PlaneBuilder:
    """Fills reused ``yuva444p10le`` frames from RGB(A) uint8/uint16 images. Not thread-safe: one per encoder
    context (the frames it owns are the state).

    ``frames``: how many frames it cycles through. An encoder threading by frames keeps up to its thread count
    of pictures in flight, each referencing the frame it was given; refilling a referenced frame makes FFmpeg copy
    it first (``make_writable``: 151 MB, ~110 ms a picture at 6K on this machine). With threads + 1 frames the one
    refilled was handed over threads + 1 pictures ago, long since released, so nothing is copied."""

    def __init__(self, width: int, height: int, sws_colorspace: int | None = None, frames: int = 1) -> None:
        self.width, self.height = int(width), int(height)
        kr, kb = KR_KB[sws_colorspace or SWS_CS_DEFAULT]
        kg = 1.0 - kr - kb
        # 16-bit limited range: Y 4096 + 56064 * y, chroma 32768 + 57344 * (c - y) / (2 (1 - k))
        self._y = np.float32([kr, kg, kb]) * np.float32(56064)
        self._u = np.float32([-kr, -kg, 1 - kb]) * np.float32(57344 / (2 * (1 - kb)))
        self._v = np.float32([1 - kr, -kg, -kb]) * np.float32(57344 / (2 * (1 - kr)))
        self._frames = [av.VideoFrame(self.width, self.height, PIX_FMT) for _ in range(max(1, int(frames)))]
        self._next = 0

    @property
    def frame(self) -> av.VideoFrame:
        """The frame the last ``build`` filled (the first one before any)."""
        return self._frames[(self._next - 1) % len(self._frames)]

    def build(self, image: np.ndarray | RgbAlpha) -> av.VideoFrame:
        """The frame for ``image`` ((H, W, 3|4) uint8 or uint16, or its colour and alpha apart): the next of the
        reused frames, refilled."""
        if isinstance(image, RgbAlpha):
            image, alpha_src = image.rgb, image.alpha
        else:
            alpha_src = image[..., 3] if image.shape[2] == 4 else None
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, frame is {self.width}x{self.height}")
        frame = self._frames[self._next]
        self._next = (self._next + 1) % len(self._frames)
        frame.make_writable()  # a buffer the encoder still references is replaced, never overwritten
        planes = [_plane(p) for p in frame.planes]
        scale = np.float32(1.0 / np.iinfo(image.dtype).max)
        # 16-bit input: swscale's rgb48/rgba64 path scales the matrix by 257/256 (white Y lands on 943, not 940,
        # at 10 bits; offsets unchanged, fitted to its output), and its decoder, which the reader uses, inverts
        # exactly that; following it keeps a 10-bit source's round trip through the product as it was
        wide = np.float32(257 / 256) if image.dtype == np.uint16 else np.float32(1)
        rows = [(planes[k], coef * scale * wide, np.float32(base))
                for k, coef, base in ((0, self._y, 4096), (1, self._u, 32768), (2, self._v, 32768))]
        for r0 in range(0, self.height, STRIP_ROWS):
            strip = image[r0:r0 + STRIP_ROWS]
            v = np.empty(strip.shape[:2], np.float32)
            t = np.empty_like(v)
            for out, coef, base in rows:
                # the exact matrix product at 16 bits (explicit per-channel ops: measured 2x faster than matmul)
                np.multiply(strip[..., 0], coef[0], out=v, dtype=np.float32)
                np.multiply(strip[..., 1], coef[1], out=t, dtype=np.float32)
                v += t
                np.multiply(strip[..., 2], coef[2], out=t, dtype=np.float32)
                v += t
                v += base
                # the 16-bit value, then rounded to 10 bits: (y16 + 32) >> 6, in integers. The limited range
                # keeps y16 in [4096, 61440] (61640 for 16-bit input), so no clip is needed and + 32 cannot wrap
                np.rint(v, out=v)
                dst = out[r0:r0 + STRIP_ROWS]
                dst[...] = v
                dst += np.uint16(32)
                dst >>= np.uint16(6)
            alpha = planes[3][r0:r0 + STRIP_ROWS]
            if alpha_src is None:
                alpha[...] = 1023
            elif image.dtype == np.uint8:
                np.take(_ALPHA8, alpha_src[r0:r0 + STRIP_ROWS], out=alpha)
            else:  # 16 -> 10 bits, rounded, in uint16 (no wider temporary)
                a = alpha_src[r0:r0 + STRIP_ROWS]
                np.right_shift(a, 6, out=alpha)
                alpha += (a >> 5) & 1
                np.minimum(alpha, 1023, out=alpha)
        return frame
