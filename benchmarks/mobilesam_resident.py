"""Legacy (numpy) vs GPU-resident MobileSAM ``predict``: per-call latency, peak memory, device-to-host copies.

    .venv/bin/python benchmarks/mobilesam_resident.py [--device cpu|cuda] [--size 1536] [--boxes 4] [--iters 30]
                                                      [--checkpoint mobile_sam.pt] [--profile-frames 10]

Every mode runs on the same image and boxes with the classic call (``multimask_output=True``, boolean masks) and
hands its caller the same thing, each box's best mask:

* legacy:       ``as_numpy=True,  return_low_res=True``; the caller takes ``masks[scores.argmax()]`` per box
                on the host, as a classic SamPredictor user does
* resident:     ``as_numpy=False, return_low_res=False, best_only=True``; the best mask picked on the device and
                only it upsampled (at the autocast dtype on CUDA: only its sign is kept)
* resident_all: ``as_numpy=False, return_low_res=False``; all three masks upsampled and kept on the device, the
                pick on the device (what the resident call cost before ``best_only``; reported, not the target)

``set_image`` runs once; only ``predict`` (and the caller's pick) is timed (median over ``--iters`` calls per
mode after warm-up, the modes' calls interleaved in one process so that a change in machine load affects all
alike). On CUDA each timed call ends with a synchronisation so that the resident modes' queued work is counted.

Peak memory is the predict loop's own working memory, so that the model and the image embedding (the same in
all modes) do not hide the difference: on CUDA ``torch.cuda.max_memory_allocated`` during the loop minus what
was allocated before it; on the CPU the process RSS peak during the loop (sampled every millisecond) minus the RSS
before it. Each mode's memory is measured in its own child process (5 calls after one warm-up call) so that one
mode's allocator caches do not flatter another.

With ``--device cuda`` the torch profiler also runs the engine's hot path (``MobileSamSegmenter.segment``: one
``set_image`` and one batched resident predict per frame, boxes following the masks on the device) and counts
``Memcpy DtoH`` events per frame; the target is 0. It is reported on a ``profiler:`` line.

The last line of output is one JSON object: ``{"device": .., "legacy_ms": .., "resident_ms": .., "speedup": ..,
"resident_all_ms": .., "legacy_peak_mb": .., "resident_peak_mb": ..}`` (speedup = legacy / resident).
``--smoke`` (256-px image, 1 box, 1 call per mode) checks the script; its figures are not measurements.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

MODES = {
    "legacy": dict(as_numpy=True, return_low_res=True),
    "resident": dict(as_numpy=False, return_low_res=False, best_only=True),
    "resident_all": dict(as_numpy=False, return_low_res=False),
}

SMOKE_KEYS = ("device", "legacy_ms", "resident_ms", "speedup", "resident_all_ms", "legacy_peak_mb",
              "resident_peak_mb")


def _setup(args):
    import numpy as np
    import torch

    from vr180matte.engines.mobilesam_predictor import MobileSamPredictor, load_mobile_sam

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = load_mobile_sam(args.checkpoint, device, random_init=args.checkpoint is None)
    predictor = MobileSamPredictor(model)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).to(device)
    # N person-sized boxes spread over the image, as a detector would give them
    s = args.size
    boxes = np.array(
        [[(0.05 + 0.9 * i / args.boxes) * s, 0.2 * s, (0.05 + 0.9 * (i + 0.8) / args.boxes) * s, 0.9 * s]
         for i in range(args.boxes)],
        dtype=np.float32,
    )
    return torch, predictor, image, torch.from_numpy(boxes).to(device)


class _RssPeak:
    """Samples this process's RSS every millisecond in a thread (CPU peak memory of a loop)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _call(torch, predictor, boxes, flags):
    """One predict and the caller's pick of each box's best mask (on the host for legacy, on the device else)."""
    masks, scores, _low = predictor.predict(box=boxes, **flags)
    if masks.shape[1] > 1:
        rows = torch.arange(masks.shape[0], device=masks.device) if torch.is_tensor(masks) else range(len(masks))
        masks = masks[rows, scores.argmax(1)]
    if boxes.device.type == "cuda":
        torch.cuda.synchronize(boxes.device)
    return masks


def run_timing(args) -> dict:
    """Child process: median latency of both modes, calls interleaved so that load drift hits both alike."""
    torch, predictor, image, boxes = _setup(args)
    predictor.set_image(image)
    for _ in range(args.warmup):
        for flags in MODES.values():
            _call(torch, predictor, boxes, flags)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for i in range(args.iters):
        order = list(MODES) if i % 2 == 0 else list(MODES)[::-1]
        for mode in order:
            t0 = time.perf_counter()
            out = _call(torch, predictor, boxes, MODES[mode])
            times[mode].append((time.perf_counter() - t0) * 1000)
            del out
    return {m: {"median_ms": statistics.median(t), "min_ms": min(t)} for m, t in times.items()}


def run_memory(args) -> dict:
    """Child process: the peak working memory of one mode's predict loop (see the module docstring)."""
    torch, predictor, image, boxes = _setup(args)
    flags = MODES[args.mode]
    predictor.set_image(image)
    _call(torch, predictor, boxes, flags)  # warm-up: one-time allocations are not the loop's working memory
    n = min(args.iters, 5)
    if boxes.device.type == "cuda":
        torch.cuda.synchronize(boxes.device)
        before = torch.cuda.memory_allocated(boxes.device)
        torch.cuda.reset_peak_memory_stats(boxes.device)
        for _ in range(n):
            out = _call(torch, predictor, boxes, flags)
            del out
        peak_mb = (torch.cuda.max_memory_allocated(boxes.device) - before) / 2**20
    else:
        with _RssPeak() as rss:
            for _ in range(n):
                out = _call(torch, predictor, boxes, flags)
                del out
        peak_mb = (rss.peak - rss.base) / 2**20
    return {"mode": args.mode, "peak_mb": max(peak_mb, 0.0)}


def profile_hot_path(args) -> dict:
    """CUDA only: device-to-host memcpy events per frame of the segmenter's hot path, and of legacy predict."""
    from torch.profiler import ProfilerActivity, profile

    from vr180matte.engines.mobilesam import MobileSamSegmenter

    torch, predictor, image, boxes = _setup(args)
    seg = MobileSamSegmenter(predictor)
    for i, b in enumerate(boxes.cpu().numpy()):
        seg.add_prompt(i, box=b)
    seg.segment(0, image)  # warm-up (and the prompt frame)
    torch.cuda.synchronize()

    def count(fn) -> tuple[int, int]:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for f in range(args.profile_frames):
                fn(f)
            torch.cuda.synchronize()
        names = [e.name for e in prof.events()]
        dtoh = sum("Memcpy DtoH" in n for n in names)
        syncs = sum(n in ("cudaStreamSynchronize", "cudaDeviceSynchronize") for n in names)
        return dtoh, syncs

    res_dtoh, res_sync = count(lambda f: seg.segment(f + 1, image))
    predictor.set_image(image)
    leg_dtoh, leg_sync = count(lambda f: predictor.predict(box=boxes, **MODES["legacy"]))
    n = args.profile_frames
    return {"frames": n, "resident_dtoh_per_frame": res_dtoh / n, "resident_syncs_per_frame": res_sync / n,
            "legacy_dtoh_per_call": leg_dtoh / n, "legacy_syncs_per_call": leg_sync / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--size", type=int, default=1536, help="square image side (1536 = one eye at scale 0.5)")
    ap.add_argument("--boxes", type=int, default=4, help="boxes per predict (persons per frame)")
    ap.add_argument("--iters", type=int, default=None, help="timed calls per mode (default 100 on CUDA, 20 on CPU)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="mobile_sam.pt (default: random weights)")
    ap.add_argument("--profile-frames", type=int, default=10, help="CUDA: frames under the torch profiler (0 = off)")
    ap.add_argument("--smoke", action="store_true", help="256-px image, 1 box, 1 call per mode: checks the script")
    ap.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)  # child process
    ap.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--timing-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.size, args.boxes, args.iters, args.warmup = 256, 1, 1, 0
        args.profile_frames = min(args.profile_frames, 2)
    if args.iters is None:
        args.iters = 100 if args.device.startswith("cuda") else 20

    if args.mode or args.profile_child or args.timing_child:
        if args.profile_child:
            result = profile_hot_path(args)
        elif args.timing_child:
            result = run_timing(args)
        else:
            result = run_memory(args)
        print(json.dumps(result))
        return 0

    common = [sys.executable, __file__, "--device", args.device, "--size", str(args.size), "--boxes",
              str(args.boxes), "--iters", str(args.iters), "--warmup", str(args.warmup), "--threads",
              str(args.threads), "--profile-frames", str(args.profile_frames)]
    if args.checkpoint is not None:
        common += ["--checkpoint", str(args.checkpoint)]
    env = {**os.environ, "YOLO_OFFLINE": "1"}

    def child(extra: list[str]) -> dict:
        proc = subprocess.run(common + extra, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"benchmark child {extra} failed with exit code {proc.returncode}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    print(f"MobileSAM predict, {args.size}x{args.size} image, {args.boxes} boxes, multimask, {args.iters} calls "
          f"per mode on {args.device} ({'checkpoint ' + str(args.checkpoint) if args.checkpoint else 'random weights'})")
    timing = child(["--timing-child"])
    peaks = {mode: child(["--mode", mode])["peak_mb"] for mode in ("legacy", "resident")}
    for mode in MODES:
        r = timing[mode]
        peak = f"  peak +{peaks[mode]:.1f} MB" if mode in peaks else ""
        print(f"  {mode:12s} median {r['median_ms']:8.2f} ms  min {r['min_ms']:8.2f} ms{peak}")
    if args.device.startswith("cuda") and args.profile_frames > 0:
        print("profiler: " + json.dumps(child(["--profile-child"])))
    speedup = timing["legacy"]["median_ms"] / timing["resident"]["median_ms"]
    print(f"  speedup (legacy / resident): {speedup:.2f}x")
    print(json.dumps({
        "device": args.device,
        "legacy_ms": round(timing["legacy"]["median_ms"], 3),
        "resident_ms": round(timing["resident"]["median_ms"], 3),
        "speedup": round(speedup, 3),
        "resident_all_ms": round(timing["resident_all"]["median_ms"], 3),
        "legacy_peak_mb": round(peaks["legacy"], 1),
        "resident_peak_mb": round(peaks["resident"], 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
