"""Mask assembly of the embedded segmenter: every pixel that two tracks claim goes to one of them.

Why a step of its own: the pose model is not instance-aware inside a ROI, so where two people are close both of
their tracks see both bodies; the frame's masks are only handed on once each contested pixel has one owner. The
owner is the track whose own body (its landmark box) contains the pixel, then the more confident one; the others
are capped below it, so overlapping people do not swallow each other and the union of the masks is unchanged.
"""
from __future__ import annotations

import numpy as np


def resolve_overlaps(
    probs: dict[int, np.ndarray], bodies: dict[int, np.ndarray | None] | None = None, grow: float = 0.1
) -> None:
    """Give every contested pixel (two or more tracks above 0.5) to one track, in place.

    The owner is the track whose body box (``bodies``, grown by ``grow`` of its size) contains the pixel, then
    the most confident; every other track is capped at ``min(p, 1 - p_owner)`` there, so each pixel belongs to
    one person while the union (max over tracks) is unchanged.
    """
    if len(probs) < 2:
        return
    ids = list(probs)
    stack = np.stack([probs[i] for i in ids])
    contested = (stack > 0.5).sum(axis=0) >= 2
    if not contested.any():
        return
    ys, xs = np.nonzero(contested)
    vals = stack[:, ys, xs]  # (n_tracks, n_contested)
    rank = vals.copy()
    for k, tid in enumerate(ids):
        b = (bodies or {}).get(tid)
        if b is None:
            continue
        gx, gy = grow * (b[2] - b[0]), grow * (b[3] - b[1])
        inside = (xs >= b[0] - gx) & (xs < b[2] + gx) & (ys >= b[1] - gy) & (ys < b[3] + gy)
        rank[k] = np.where(inside, vals[k] + 1.0, vals[k])  # own body first, then confidence
    owner = rank.argmax(axis=0)
    p_owner = vals[owner, np.arange(len(owner))]
    for k, tid in enumerate(ids):
        lose = owner != k
        if not lose.any():
            continue
        p = probs[tid].copy()
        p[ys[lose], xs[lose]] = np.minimum(vals[k, lose], 1.0 - p_owner[lose])
        probs[tid] = p
