"""Cost of the passthrough deliverable's own stages at VR180 6K (issue 13): fisheye grid (once per video),
reprojection + alpha packing of one 6144x3072 SBS frame, and edge decontamination of one 3072x3072 eye with a
person-sized figure (an ellipse 1000 x 2200 px with a ~16 px soft edge). Synthetic frames: no media needed.
The last line is one JSON object. The one-time setup is reported in two parts: ``grid_s`` (the fisheye sampling
grid, built by the packer's constructor) and ``tables_s`` (OpenCV's remap tables, built by the first CPU call:
the first call's time minus a steady call's); ``setup_s`` is their sum, the cost paid once per video.

    .venv/bin/python benchmarks/passthrough_cost.py [--eye 3072] [--threads 2]
    .venv/bin/python benchmarks/passthrough_cost.py --smoke     # 256-px eye: checks the script, not a figure
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from vr180matte.matte.decontaminate import decontaminate
from vr180matte.matte.fisheye import PassthroughPacker

SMOKE_KEYS = ("grid_s", "tables_s", "setup_s", "pack_frame_s", "decontaminate_eye_s", "tiles")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eye", type=int, default=3072)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="tiny run (256-px eye) that checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.eye = 256
    torch.set_num_threads(args.threads)
    E = args.eye
    yy, xx = np.mgrid[0:E, 0:E].astype(np.float32)
    d = np.sqrt(((xx - E * 0.49) / (E * 0.163)) ** 2 + ((yy - E * 0.55) / (E * 0.358)) ** 2)
    alpha = torch.from_numpy(np.clip((1 - d) * 60 + 0.5, 0, 1))
    rgb = torch.from_numpy((np.random.default_rng(0).random((E, E, 3)) * 255).astype(np.uint8))
    t = time.perf_counter()
    packer = PassthroughPacker(E, 190)
    t_grid = time.perf_counter() - t
    t = time.perf_counter()
    packer(rgb, rgb, alpha, alpha)  # the first call also builds the CPU remap tables
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    packer(rgb, rgb, alpha, alpha)
    t_pack = time.perf_counter() - t
    t_tables = max(0.0, t_first - t_pack)
    t = time.perf_counter()
    _, rep = decontaminate(rgb.clone(), alpha, threads=args.threads)
    t_dec = time.perf_counter() - t
    print(json.dumps({"bench": "passthrough_cost", "eye": E, "threads": args.threads, "grid_s": round(t_grid, 2),
                      "tables_s": round(t_tables, 2), "setup_s": round(t_grid + t_tables, 2),
                      "pack_frame_s": round(t_pack, 2), "decontaminate_eye_s": round(t_dec, 2), **rep}))


if __name__ == "__main__":
    main()
