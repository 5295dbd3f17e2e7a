"""Metrics against analytic alpha (anti-aliased disks): perfect scores perfectly, shifted/flickering/stair-stepped
scores worse by the expected amount."""
import math

import cv2
import numpy as np
import torch

from vr180matte.quality import metrics as M


def disk(n=128, cx=64.0, cy=64.0, r=30.0):
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    return np.clip(r + 0.5 - np.hypot(yy - cy + 0.5, xx - cx + 0.5), 0, 1)


def textured(n=128, cx=64.0, cy=64.0, r=30.0, seed=0):
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (n, n, 3)).astype(np.uint8), (0, 0), 1.5)
    a = disk(n, cx, cy, r)[..., None]
    return (a * np.array([230, 200, 160]) + (1 - a) * bg).astype(np.uint8)


def test_perfect_prediction():
    gt = disk()
    assert M.iou(gt, gt) == 1.0
    assert M.boundary_f(gt, gt) == 1.0
    assert M.mad(gt, gt) == 0.0
    assert M.dtssd(gt, disk(cx=66), gt, disk(cx=66)) == 0.0
    assert M.iou(torch.from_numpy(gt), (gt * 255).astype(np.uint8)) == 1.0  # torch / uint8 inputs


def test_shifted_prediction_scores_worse_by_expected_amount():
    gt = disk(r=30)
    pred = disk(cx=64 + 4, r=30)  # 4 px shift of a radius-30 disk
    # two disks of radius r at distance d: lens area 2r^2 acos(d/2r) - d/2 sqrt(4r^2 - d^2)
    r, d = 30.5, 4.0
    inter = 2 * r * r * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r * r - d * d)
    expected_iou = inter / (2 * math.pi * r * r - inter)
    assert abs(M.iou(pred, gt) - expected_iou) < 0.01
    # symmetric difference area ~ 2(pi r^2 - inter) -> MAD x1e3
    expected_mad = 2 * (math.pi * r * r - inter) / gt.size * 1e3
    assert abs(M.mad(pred, gt) - expected_mad) / expected_mad < 0.05
    assert M.boundary_f(pred, gt, tol_px=1) < 0.7 < M.boundary_f(pred, gt, tol_px=4)
    assert M.boundary_f(pred, gt, tol_px=5) == 1.0
    assert M.boundary_f(np.zeros_like(gt), gt) == 0.0 and M.boundary_f(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_dtssd_flicker():
    gts = [disk(cx=60 + t) for t in range(4)]
    follows = [disk(cx=60 + t) for t in range(4)]
    flicker = [disk(cx=60 + t, r=30 + (2 if t % 2 else 0)) for t in range(4)]
    d_follow = np.mean([M.dtssd(follows[t], follows[t + 1], gts[t], gts[t + 1]) for t in range(3)])
    d_flick = np.mean([M.dtssd(flicker[t], flicker[t + 1], gts[t], gts[t + 1]) for t in range(3)])
    assert d_follow == 0.0
    # a 2 px radius flicker changes ~2*pi*31*2 px of a 128^2 frame by 1: sqrt(390/16384) x 100 ~ 15
    assert 10 < d_flick < 20, d_flick


def test_edge_consistency_stair_steps():
    smooth = disk(n=256, cx=128, cy=128, r=80)
    small = cv2.resize(smooth.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    stairs = cv2.resize((small > 0.5).astype(np.float32), (256, 256), interpolation=cv2.INTER_NEAREST)
    e_smooth, e_stairs = M.edge_consistency(smooth), M.edge_consistency(stairs)
    assert e_smooth > 0.9, e_smooth
    assert e_stairs < e_smooth - 0.2, (e_smooth, e_stairs)
    assert M.edge_consistency(np.zeros((32, 32))) == 1.0


def test_temporal_stability_flicker_vs_motion():
    # the disk (and its texture) moves 3 px: alpha follows the image -> explained by motion
    f0, f1 = textured(cx=60), textured(cx=63)
    moving = M.temporal_stability(disk(cx=60), disk(cx=63), f0, f1)
    # static image, alpha radius flickers by 2 px -> unexplained
    flick = M.temporal_stability(disk(r=30), disk(r=32), f0, f0)
    still = M.temporal_stability(disk(), disk(), f0, f0)
    assert still == 1.0
    assert moving > 0.8, moving
    assert flick < 0.65, flick  # 2 px change, 1 px slack -> ~0.7 px unexplained -> ~0.58
    assert moving > flick + 0.25, (moving, flick)
