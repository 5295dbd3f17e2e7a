"""The PNG-sequence segment: one ``{frame_index:06d}.png`` per frame in a folder, optionally on several threads.

Why a module of its own: a PNG "segment" has no container, stream or muxer, so it shares nothing with the
FFmpeg path of :class:`vr180matte.io.writer.SegmentWriter` but the frame checks the writer does before either.
16-bit PNG for >8-bit sources: cv2 writes uint16 arrays as 16-bit PNG, so a 10-bit source keeps its precision.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vr180matte.io.errors import OutputError
from vr180matte.io.parallel_encode import FilePool
from vr180matte.io.picture import RgbAlpha


def write_png(folder: Path, image: np.ndarray | RgbAlpha, index: int) -> None:
    """``{index:06d}.png`` in ``folder``; cv2 writes uint16 arrays as 16-bit PNG, so a 10-bit source keeps its
    precision. Colour and alpha apart are interleaved into BGRA in one copy (what the cvtColor below costs)."""
    import cv2

    target = folder / f"{index:06d}.png"
    if isinstance(image, RgbAlpha):
        bgr = image.rgba(bgr=True)
    else:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(target), bgr):
        raise OutputError(f"cannot write {target}; check free space and permissions")


class PngSequence:
    """A folder of PNG files being written; ``files`` > 1 writes that many at once (:class:`FilePool`)."""

    def __init__(self, path: Path, files: int) -> None:
        import cv2  # noqa: F401  (fail here, not at the first frame)

        self.path = path
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {self.path}: {exc.strerror}; choose a writable path") from None
        #: N writer threads (None: each file written inline)
        self.pool: FilePool | None = FilePool(files, lambda item: self._write(*item)) if files > 1 else None

    def write(self, image: np.ndarray | RgbAlpha, index: int) -> None:
        if self.pool is not None:
            self.pool.submit((image, index))
        else:
            self._write(image, index)

    def _write(self, image: np.ndarray | RgbAlpha, index: int) -> None:
        write_png(self.path, image, index)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
