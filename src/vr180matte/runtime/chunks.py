"""Chunk plan, work folder, manifest and resume.

A video of ``n`` frames is cut at boundaries ``b_k = k * chunk_size``. With overlap ``o``:

* chunk ``k`` *processes* frames ``[b_k - o, b_{k+1})`` (chunk 0 from 0): the first ``o`` frames re-run the
  engine from the previous chunk's hand-off so tracks and segmenter memory are warm;
* chunk ``k`` *writes* frames ``[b_k - o, b_{k+1} - o)`` (the last chunk writes to ``n``); its last ``o``
  processed frames are not written but kept (small, low-res) for the next chunk, which writes them
  blended with its own result. Every frame is therefore encoded exactly once, by one chunk.

A finished chunk leaves, in the work folder, its encoded segment, its hand-off file and a ``.done.json``
marker written last (atomically). A re-run with the same input fingerprint and config digest skips done
chunks and continues from the hand-off of the last one, so an interrupted run produces the same frames as
an uninterrupted one: an uninterrupted run also reloads every hand-off from disk.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Chunk:
    index: int
    process_start: int  # first frame run through the engine
    write_start: int  # first frame encoded by this chunk
    write_end: int  # one past the last frame encoded by this chunk
    process_end: int  # one past the last frame run through the engine
    overlap_in: int = 0  # leading frames also processed by the previous chunk (blended on write)
    last: bool = True

    @property
    def handoff_frame(self) -> int | None:
        """Frame whose masks seed the next chunk (None for the last chunk).

        With overlap it is the next chunk's first frame (processed by both); without, this chunk's last frame.
        """
        if self.last:
            return None
        return self.write_end if self.process_end > self.write_end else self.process_end - 1

    def blend_weight(self, frame: int) -> float | None:
        """Weight of THIS chunk's result on an overlap frame shared with the previous chunk, else None."""
        if self.overlap_in == 0 or frame >= self.process_start + self.overlap_in:
            return None
        return (frame - self.process_start + 1) / (self.overlap_in + 1)


def plan_chunks(total: int, chunk_size: int, overlap: int) -> list[Chunk]:
    """Chunks covering ``total`` frames; ``chunk_size`` 0 means a single chunk."""
    if total <= 0:
        return []
    if chunk_size <= 0 or chunk_size >= total:
        return [Chunk(0, 0, 0, total, total)]
    if overlap >= chunk_size:
        clamped = chunk_size // 2
        log.warning("overlap_frames=%d >= chunk_size=%d: using %d", overlap, chunk_size, clamped)
        overlap = clamped
    bounds = list(range(0, total, chunk_size)) + [total]
    # A tiny tail chunk would carry little context; fold it into the previous one.
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < max(overlap + 1, chunk_size // 4):
        bounds.pop(-2)
    chunks = []
    n = len(bounds) - 1
    for k in range(n):
        p0 = 0 if k == 0 else bounds[k] - overlap
        p1 = bounds[k + 1]
        w1 = p1 if k == n - 1 else p1 - overlap
        chunks.append(Chunk(k, p0, p0, w1, p1, 0 if k == 0 else overlap, last=k == n - 1))
    return chunks


def fingerprint(path: Path) -> str:
    """Cheap identity of an input file: size, mtime and hashes of its first and last MiB."""
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:24]


def atomic_write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class WorkDir:
    """``OUT_DIR/.vr180matte/<stem>/``: segments, hand-offs and markers of one job."""

    def __init__(self, out_dir: Path, stem: str):
        self.root = out_dir / ".vr180matte" / stem
        self.manifest_path = self.root / "manifest.json"
        self.out_dir, self.stem = out_dir, stem

    def lock(self):
        """Exclusive lock of this job (a context manager; :class:`~vr180matte.errors.LockedError` when another
        live run holds it). Taken before :meth:`prepare` and held until the outputs are final."""
        from .lock import WorkLock

        return WorkLock(self.root.parent / f"{self.stem}.lock", f"output {self.out_dir / self.stem}.*")

    def prepare(self, input_fp: str, config_digest: str, chunks: list[Chunk]) -> int:
        """Create or validate the folder; returns how many leading chunks are already done."""
        manifest = {
            "version": MANIFEST_VERSION,
            "input": input_fp,
            "config": config_digest,
            "chunks": [[c.process_start, c.write_start, c.write_end, c.process_end] for c in chunks],
        }
        if self.manifest_path.exists():
            try:
                old = json.loads(self.manifest_path.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old == manifest:
                done = self.done_count(len(chunks))
                self._clear_partials()
                if done:
                    log.info("resuming: %d of %d chunks already done", done, len(chunks))
                return done
            log.info("input or config changed since the last run: starting over")
            shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest_path, manifest)
        return 0

    def done_count(self, n: int) -> int:
        k = 0
        while k < n and self.done_marker(k).exists():
            k += 1
        return k

    def _clear_partials(self) -> None:
        for p in self.root.glob("*.partial*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def done_marker(self, k: int) -> Path:
        return self.root / f"chunk_{k:05d}.done.json"

    def handoff_path(self, k: int) -> Path:
        return self.root / f"handoff_{k:05d}.pt"

    def segment_path(self, k: int, suffix: str, eye: str | None = None) -> Path:
        tag = f"_{eye}" if eye else ""
        return self.root / f"seg_{k:05d}{tag}{suffix}"

    def partial(self, path: Path) -> Path:
        return path.with_name(path.stem + ".partial" + path.suffix)

    def mark_done(self, k: int, info: dict) -> None:
        atomic_write_json(self.done_marker(k), info)

    def read_done(self, k: int) -> dict:
        return json.loads(self.done_marker(k).read_text())

    def discard_if_unstarted(self, n_chunks: int, out_created: bool = False) -> bool:
        """After a failed or refused run: remove the work folder when no chunk finished (nothing to resume), and
        the output folder too when this run created it and it is empty. Returns whether anything was removed."""
        if self.root.exists() and self.done_count(n_chunks) > 0:
            return False
        self.remove()
        out = self.out_dir
        if out_created and out.is_dir():
            leftovers = [p for p in out.iterdir() if p.name != ".vr180matte"]
            hidden = out / ".vr180matte"
            if not leftovers and (not hidden.exists() or not any(hidden.iterdir())):
                if hidden.exists():
                    hidden.rmdir()
                out.rmdir()
        return True

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        parent = self.root.parent
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()


def chunk_log_entry(chunk: Chunk, seconds: float, **extra) -> dict:
    d = {"start": chunk.write_start, "end": chunk.write_end, "seconds": round(seconds, 3)}
    d.update({"process_start": chunk.process_start, "process_end": chunk.process_end, **extra})
    return d


