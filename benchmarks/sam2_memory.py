"""Peak memory and speed: stock SAM2VideoPredictor vs. our streaming segmenter, N and 4N frames.

Each measurement runs in a fresh Python subprocess (so the peak RSS, ``ru_maxrss`` of that process, belongs to
that run alone), with the same random-init SAM2.1 hiera-tiny (seeded) on CPU at a reduced ``image_size``.
Both track the same two box-prompted objects from frame 0 on the same synthetic frames.

* stock: frames written as a JPEG folder (decord is not installed), ``init_state`` + ``add_new_points_or_box`` +
  ``propagate_in_video`` -- the documented way to use the predictor;
* ours: ``StreamingSam2Segmenter.segment`` fed one frame at a time, each decoded from the same JPEG folder just
  before it is segmented (no tensor of the video).

Like for like: both timings include producing the frames from the same JPEG files (the stock predictor decodes
them in ``init_state``, ours decodes each one inside its timed loop); model building is outside both.

Usage: ``python benchmarks/sam2_memory.py [--frames 8] [--image-size 256] [--frame-size 320]``;
``--smoke`` (N = 1, 128-px frames) checks the script, its figures are not measurements.
The last line printed is one JSON object (see issue 3).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SMOKE_KEYS = ("frames_n", "stock_rss_mb_n", "stock_rss_mb_4n", "ours_rss_mb_n", "ours_rss_mb_4n",
              "stock_s_per_frame", "ours_s_per_frame")
BOXES = {1: [0.10, 0.15, 0.45, 0.90], 2: [0.50, 0.10, 0.90, 0.85]}  # fractions of the frame


def frame(i: int, size: int) -> np.ndarray:
    """Deterministic frame: noise background and two moving blocks (uint8 RGB)."""
    rng = np.random.default_rng(i)
    img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
    s = size // 8
    for k, (x0, y0, x1, y1) in BOXES.items():
        dx = int(i * s / 16) * (1 if k == 1 else -1)
        ys, xs = slice(int(y0 * size), int(y1 * size)), slice(max(0, int(x0 * size) + dx), int(x1 * size) + dx)
        img[ys, xs] = (200, 60 * k, 40)
    return img


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _build(image_size: int):
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    return build_sam2_video_predictor(
        CONFIG, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={image_size}"]
    )


def child(kind: str, n: int, image_size: int, frame_size: int, folder: str) -> dict:
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = _build(image_size)
    rss_model = _peak_rss_mb()
    boxes = {k: np.array(b, np.float32) * frame_size for k, b in BOXES.items()}
    checksum = 0.0
    if kind == "stock":
        t0 = time.perf_counter()
        with torch.inference_mode():
            state = model.init_state(folder)
            for k, b in boxes.items():
                model.add_new_points_or_box(state, 0, k, box=b)
            count = 0
            for _, _, masks in model.propagate_in_video(state):
                checksum += float((masks > 0).float().mean())
                count += 1
        seconds = time.perf_counter() - t0
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from vr180matte.engines.sam2_stream import StreamingSam2Segmenter

        from PIL import Image

        seg = StreamingSam2Segmenter(model, "cpu", fp16=False, offload_to_cpu=True)
        for k, b in boxes.items():
            seg.add_prompt(k, box=b)
        count = 0
        t0 = time.perf_counter()
        for i in range(n):
            # decoded lazily from the same JPEG the stock predictor reads: frame production timed on both sides
            img = torch.from_numpy(np.asarray(Image.open(Path(folder) / f"{i:05d}.jpg").convert("RGB")))
            out = seg.segment(i, img)
            checksum += sum(float((p > 0.5).float().mean()) for p in out.values()) / max(1, len(out))
            count += 1
        seconds = time.perf_counter() - t0
    assert count == n, (count, n)
    return {"rss_mb": _peak_rss_mb(), "rss_model_mb": rss_model, "s_per_frame": seconds / n, "checksum": checksum}


def run_child(kind: str, n: int, args, folder: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--n", str(n), "--image-size", str(args.image_size),
           "--frame-size", str(args.frame_size), "--folder", folder]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=8, help="N (the long run has 4N frames)")
    p.add_argument("--image-size", type=int, default=256, help="SAM2 image_size override (1024 is the real one)")
    p.add_argument("--frame-size", type=int, default=320, help="square input frame size in pixels")
    p.add_argument("--smoke", action="store_true", help="N = 1, 128-px frames: checks the script")
    p.add_argument("--child", choices=["stock", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--folder", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.smoke:
        args.frames, args.frame_size = 1, 128
    if args.child:
        print(json.dumps(child(args.child, args.n, args.image_size, args.frame_size, args.folder)))
        return

    from PIL import Image

    n = args.frames
    print(f"SAM2.1 hiera-tiny, random init, CPU, image_size={args.image_size}, frames {args.frame_size}px, "
          f"2 objects, N={n} and 4N={4 * n}; each run in a fresh subprocess")
    res: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for frames in (n, 4 * n):
            folder = Path(tmp) / f"f{frames}"
            folder.mkdir()
            for i in range(frames):
                Image.fromarray(frame(i, args.frame_size)).save(folder / f"{i:05d}.jpg", quality=95)
            for kind in ("stock", "ours"):
                r = run_child(kind, frames, args, str(folder))
                res[(kind, frames)] = r
                print(f"{kind:5s} {frames:3d} frames: peak RSS {r['rss_mb']:7.1f} MB "
                      f"(after model build {r['rss_model_mb']:7.1f} MB, +{r['rss_mb'] - r['rss_model_mb']:.1f} MB "
                      f"while tracking), {r['s_per_frame']:.3f} s/frame")
    for kind in ("stock", "ours"):
        a, b = res[(kind, n)], res[(kind, 4 * n)]
        print(f"{kind:5s} ratio peak RSS 4N/N = {b['rss_mb'] / a['rss_mb']:.3f}; growth while tracking "
              f"{a['rss_mb'] - a['rss_model_mb']:.1f} MB -> {b['rss_mb'] - b['rss_model_mb']:.1f} MB")

    def spf(kind: str) -> float:  # seconds per frame over all frames processed by that engine
        tot = sum(res[(kind, f)]["s_per_frame"] * f for f in (n, 4 * n))
        return tot / (5 * n)

    print(json.dumps({
        "frames_n": n,
        "stock_rss_mb_n": round(res[("stock", n)]["rss_mb"], 1),
        "stock_rss_mb_4n": round(res[("stock", 4 * n)]["rss_mb"], 1),
        "ours_rss_mb_n": round(res[("ours", n)]["rss_mb"], 1),
        "ours_rss_mb_4n": round(res[("ours", 4 * n)]["rss_mb"], 1),
        "stock_s_per_frame": round(spf("stock"), 4),
        "ours_s_per_frame": round(spf("ours"), 4),
    }))


if __name__ == "__main__":
    main()
