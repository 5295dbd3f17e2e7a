"""ProRes 4444 with alpha at 6144x3072: one encoder context against N on consecutive frames, prores_ks against
prores_aw.

For each encoder, the product's own writer (io/writer.py: planes built straight from RGBA, io/planes.py) encodes
the same frames twice: one context with all the threads (FFmpeg's own frame/slice threads), then N contexts
(io/parallel_encode.py) sharing them. It prints fps of each, whether the video packets are byte-identical, and
whether the file is valid: it opens (PyAV, and the ffmpeg binary's decoder when the imageio-ffmpeg wheel is
there), holds every frame, keeps 10-bit+ alpha and decodes the alpha back within one 8-bit step of the source.
It also times the frame hand-off alone: ``from_ndarray`` + swscale against io/planes.py's builder.

The encoder picked is the fastest valid one at N. Last line: one JSON object (SMOKE_KEYS, then per-encoder
figures). ``--smoke``: 256x128, 6 frames, a few seconds.

    flock /tmp/vr180-heavy.lock nice .venv/bin/python benchmarks/encode_parallel.py [--frames 24] [--n 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vr180matte.io import budget, codecs
from vr180matte.io.planes import PlaneBuilder
from vr180matte.io.writer import SegmentWriter
from vr180matte.compat.machine import available_cores

SMOKE_KEYS = ("n", "fps_1", "fps_n", "identical", "encoder", "threads", "valid", "convert_ms.swscale",
              "convert_ms.planes")

ENCODERS = {
    "prores_ks": "prores4444",  # the product's row
    # the same row with FFmpeg's other ProRes encoder (profile 4 = 4444; it has no alpha_bits option)
    "prores_aw": "prores4444_aw",
}
codecs.CODECS.setdefault("prores4444_aw", dataclasses.replace(
    codecs.CODECS["prores4444"], name="prores4444_aw", encoder="prores_aw", options={"profile": "4", "vendor": "apl0"}))


def make_frames(width: int, height: int, k: int = 4) -> list[np.ndarray]:
    """``k`` different RGBA frames: textured colour (so ProRes has detail to code) and a soft-edged alpha blob
    per eye, like a matted person."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width // 2].astype(np.float32)
    frames = []
    for i in range(k):
        img = np.empty((height, width, 4), np.uint8)
        tex = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        img[..., :3] = tex
        img[..., 0] = (img[..., 0] // 2 + (np.arange(width) * 127 // width)[None, :]).astype(np.uint8)
        cx, cy = width / 4 + 8 * i, height / 2
        d = np.sqrt(((xx - cx) / (width / 10)) ** 2 + ((yy - cy) / (height / 3)) ** 2)
        eye_alpha = np.clip((1.2 - d) * 400, 0, 255).astype(np.uint8)
        img[:, : width // 2, 3] = eye_alpha
        img[:, width // 2:, 3] = eye_alpha
        frames.append(img)
    return frames


def encode(path: Path, codec: str, frames: list[np.ndarray], count: int, n: int, threads: int) -> float:
    """fps of encoding ``count`` frames (cycling ``frames``) with ``n`` contexts sharing ``threads`` threads (the
    writer may use fewer contexts where io/budget.py's memory budget says so: that is checked by the caller)."""
    h, w = frames[0].shape[:2]
    t0 = time.perf_counter()
    with SegmentWriter(path, codec, w, h, Fraction(1, 30), Fraction(30), encoders=n, threads=threads) as writer:
        if writer.encoders != n:
            raise SystemExit(f"the writer runs {writer.encoders} contexts at {w}x{h}, not {n} (io/budget.py): "
                             f"use --n {writer.encoders}")
        for i in range(count):
            writer.write(frames[i % len(frames)], i, i)
    return count / (time.perf_counter() - t0)


def packets(path: Path) -> list[tuple]:
    with av.open(str(path)) as c:
        return [(p.pts, hashlib.sha256(bytes(p)).hexdigest()) for p in c.demux(video=0) if p.size]


def valid(path: Path, frames: list[np.ndarray], count: int) -> tuple[bool, str]:
    """Opens, holds ``count`` frames, keeps >=10-bit alpha, alpha decodes back within one 8-bit step."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pix = s.codec_context.pix_fmt or ""
        if not pix.startswith("yuva444p1"):
            return False, f"pixel format {pix} (no 10-bit+ alpha)"
        worst, got = 0, 0
        for i, f in enumerate(c.decode(s)):
            a = f.to_ndarray(format="rgba")[..., 3].astype(np.int16)
            worst = max(worst, int(np.abs(a - frames[i % len(frames)][..., 3]).max()))
            got += 1
    if got != count:
        return False, f"{got} of {count} frames decode"
    if worst > 1:
        return False, f"alpha off by {worst}"
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - the wheel is a dev dependency; PyAV's check above stands alone
        return True, f"{pix}, alpha within {worst}"
    r = subprocess.run([exe, "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True)
    if r.returncode != 0 or r.stderr.strip():
        return False, "ffmpeg binary: " + " ".join(r.stderr.split())[:160]
    return True, f"{pix}, alpha within {worst}, ffmpeg binary decodes it"


def convert_ms(frame: np.ndarray, reps: int) -> dict:
    """ms per frame of the hand-off: from_ndarray + swscale (the old path) and io/planes.py's builder."""
    h, w = frame.shape[:2]
    t0 = time.perf_counter()
    for _ in range(reps):
        av.VideoFrame.from_ndarray(frame, format="rgba").reformat(format="yuva444p10le")
    sws = (time.perf_counter() - t0) / reps
    b = PlaneBuilder(w, h)
    t0 = time.perf_counter()
    for _ in range(reps):
        b.build(frame)
    return {"swscale": round(sws * 1e3, 1), "planes": round((time.perf_counter() - t0) / reps * 1e3, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=6144)
    ap.add_argument("--height", type=int, default=3072)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--threads", type=int, default=available_cores(), help="threads in all (default: cores)")
    ap.add_argument("--n", type=int, default=None, help="encoder contexts (default: min(8, threads), at least 2)")
    ap.add_argument("--smoke", action="store_true", help="tiny run (256x128, 6 frames)")
    args = ap.parse_args()
    if args.smoke:
        args.width, args.height, args.frames = 256, 128, 6
    n = args.n or max(2, min(budget.encoder_contexts(8, args.width, args.height), args.threads))
    frames = make_frames(args.width, args.height)
    tmp = Path(tempfile.mkdtemp(prefix="vr180-encpar-"))
    results = {}
    try:
        for name, codec in ENCODERS.items():
            r: dict = {}
            try:
                for k in (1, n):
                    path = tmp / f"{name}_{k}.mov"
                    key = "fps_1" if k == 1 else "fps_n"
                    r[key] = round(encode(path, codec, frames, args.frames, k, args.threads), 3)
                    print(f"{name}: {k} context(s), {args.threads} threads: {r[key]} fps", flush=True)
            except Exception as exc:  # noqa: BLE001 - an encoder that fails is reported invalid, not fatal
                results[name] = {"fps_1": r.get("fps_1"), "fps_n": r.get("fps_n"), "identical": False, "valid": False,
                                 "why": " ".join(str(exc).split())[:200]}
                print(f"{name}: failed: {results[name]['why']}", flush=True)
                continue
            r["identical"] = packets(tmp / f"{name}_1.mov") == packets(tmp / f"{name}_{n}.mov")
            r["valid"], r["why"] = valid(tmp / f"{name}_{n}.mov", frames, args.frames)
            r["mb_per_frame"] = round((tmp / f"{name}_{n}.mov").stat().st_size / args.frames / 2**20, 2)
            print(f"{name}: identical={r['identical']} valid={r['valid']} ({r['why']})", flush=True)
            results[name] = r
            for f in tmp.iterdir():
                f.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = {k: v for k, v in results.items() if v["valid"] and v["identical"]}
    best = max(ok, key=lambda k: ok[k]["fps_n"]) if ok else "prores_ks"
    conv = convert_ms(frames[0], 2 if args.smoke else 4)
    print(f"hand-off per frame: from_ndarray+swscale {conv['swscale']} ms, planes {conv['planes']} ms")
    out = {"n": n, "fps_1": results[best]["fps_1"], "fps_n": results[best]["fps_n"],
           "identical": results[best]["identical"], "encoder": best, "threads": args.threads,
           "valid": results[best]["valid"], "convert_ms": conv, "width": args.width, "height": args.height,
           "frames": args.frames, "cores": os.cpu_count(), **{k: v for k, v in results.items()}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
