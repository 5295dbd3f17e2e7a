"""Synthetic VR180 stereo clips with exact ground truth, built from real DAVIS people.

Each person is a cut-out of a DAVIS frame (its ground-truth mask as alpha) placed as a flat billboard at a
direction (yaw, pitch) and rendered into a 180x180-degree equirectangular eye through the exact inverse
projection, so people off the horizon are stretched like in a real VR180 eye. Equirect x is linear in
longitude, so rendering the right eye with the billboard's yaw reduced by ``d * 180 / W`` degrees gives
exactly the left-eye rendering shifted by ``d`` pixels: the per-person disparity is known exactly (and
subpixel). The background is a texture at its own disparity. Nearer people (larger disparity) occlude
farther ones, and the per-person ground-truth masks account for it.

Used by tests/stereo/* and benchmarks/stereo_consistency.py (which adds this folder to sys.path).
"""
from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import synth  # noqa: E402
from synth import davis_frames  # noqa: E402

from vr180matte.engines.base import Detection  # noqa: E402
from vr180matte.stereo.equirect import equirect_to_rays  # noqa: E402


@dataclass
class Person:
    """One person: DAVIS sequence, direction and disparity as functions of the frame index."""

    sequence: str
    yaw: Callable[[int], float]  # degrees, left eye
    pitch: Callable[[int], float]  # degrees, up positive
    height_deg: float  # angular height of the billboard
    disparity: Callable[[int], float]  # pixels, x_left - x_right
    frame_offset: int = 0


@dataclass
class StereoClip:
    left: list[np.ndarray]  # (H, W, 3) uint8 per frame
    right: list[np.ndarray]
    gt_left: np.ndarray  # (T, P, H, W) float32 visible alpha per person
    gt_right: np.ndarray
    disparity: np.ndarray  # (T, P) true disparity, pixels
    bg_disparity: float
    size: int
    boxes_left: list[list[np.ndarray]] = field(default_factory=list)  # per frame, per person (or None)
    boxes_right: list[list[np.ndarray]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.left)

    def tensors(self, t: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.left[t]).to(device), torch.from_numpy(self.right[t]).to(device)


def sprite(sequence: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The DAVIS person cut out by its mask, cropped with a 4 px margin (:func:`synth.sprite`)."""
    return synth.sprite(sequence, index, margin=4)


def render_billboard(rgb: np.ndarray, alpha: np.ndarray, size: int, yaw: float, pitch: float, height_deg: float,
                     fov: float = 180.0) -> tuple[np.ndarray, np.ndarray]:
    """Render a sprite as a flat billboard facing the camera at (yaw, pitch) into a size x size equirect eye."""
    h, w = alpha.shape
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    rays = equirect_to_rays(xs, ys, size, size, fov)
    y, p = math.radians(yaw), math.radians(pitch)
    fwd = np.array([math.cos(p) * math.sin(y), -math.sin(p), math.cos(p) * math.cos(y)])
    right = np.array([math.cos(y), 0.0, -math.sin(y)])
    down = np.cross(fwd, right)
    dot = rays @ fwd
    valid = dot > 1e-3
    # Gnomonic coordinates on the billboard plane at unit distance.
    a = (rays @ right) / np.where(valid, dot, 1.0)
    b = (rays @ down) / np.where(valid, dot, 1.0)
    half_h = math.tan(math.radians(height_deg) / 2.0)
    scale = h / (2 * half_h)  # sprite pixels per plane unit
    map_x = (a * scale + w / 2.0 - 0.5).astype(np.float32)
    map_y = (b * scale + h / 2.0 - 0.5).astype(np.float32)
    map_x[~valid] = -10
    map_y[~valid] = -10
    col = cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    al = cv2.remap(alpha, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return col, al


def background(size: int, seed: int = 0, pad: int = 64) -> np.ndarray:
    """A textured RGB float32 background wider than the eye (blobs + stripes), deterministic."""
    rng = np.random.default_rng(seed)
    noise = rng.random((size, size + pad, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 3.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min() + 1e-6)
    xx = np.arange(size + pad)[None, :, None]
    stripes = 0.5 + 0.5 * np.sin(xx / 7.0)
    return np.clip(40 + 150 * tex + 40 * stripes, 0, 255).astype(np.float32)


def make_clip(persons: list[Person], frames: int = 12, size: int = 256, bg_disparity: float = 2.0,
              noise: float = 2.0, seed: int = 0) -> StereoClip:
    """Render a stereo clip; ``noise``: per-eye sensor noise sigma (different in each eye)."""
    rng = np.random.default_rng(seed + 1)
    bg = background(size, seed)
    pad = 32
    M = np.float32([[1, 0, pad], [0, 1, 0]])
    bg_l = cv2.warpAffine(bg, M, (size, size), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP)
    M_r = np.float32([[1, 0, pad + bg_disparity], [0, 1, 0]])
    bg_r = cv2.warpAffine(bg, M_r, (size, size), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP)
    P = len(persons)
    gl = np.zeros((frames, P, size, size), np.float32)
    gr = np.zeros_like(gl)
    disp = np.zeros((frames, P), np.float32)
    lefts, rights = [], []
    for t in range(frames):
        d = np.array([p.disparity(t) for p in persons], np.float32)
        disp[t] = d
        order = np.argsort(d)  # far (small disparity) first
        img = {"l": bg_l.copy(), "r": bg_r.copy()}
        layers: dict[str, list[tuple[int, np.ndarray]]] = {"l": [], "r": []}
        for k in order:
            p = persons[k]
            rgb, al = sprite(p.sequence, t + p.frame_offset)
            for eye, yaw in (("l", p.yaw(t)), ("r", p.yaw(t) - d[k] * 180.0 / size)):
                col, a = render_billboard(rgb, al, size, yaw, p.pitch(t), p.height_deg)
                img[eye] = img[eye] * (1 - a[..., None]) + col * a[..., None]
                layers[eye].append((k, a))
        for eye, g in (("l", gl), ("r", gr)):
            vis = np.ones((size, size), np.float32)
            for k, a in reversed(layers[eye]):  # nearest first
                g[t, k] = a * vis
                vis = vis * (1 - a)
        for eye, out in (("l", lefts), ("r", rights)):
            im = img[eye] + rng.normal(0, noise, img[eye].shape)
            out.append(np.clip(im, 0, 255).round().astype(np.uint8))
    clip = StereoClip(lefts, rights, gl, gr, disp, bg_disparity, size)
    clip.boxes_left = [[mask_box(gl[t, k]) for k in range(P)] for t in range(frames)]
    clip.boxes_right = [[mask_box(gr[t, k]) for k in range(P)] for t in range(frames)]
    return clip


def mask_box(mask: np.ndarray, thr: float = 0.5) -> np.ndarray | None:
    ys, xs = np.nonzero(mask > thr)
    if len(ys) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def two_people(frames: int = 12, size: int = 256) -> StereoClip:
    """The standard test clip: two DAVIS people at different, changing disparities, background at 2 px."""
    persons = [
        Person("davis2016_dance-twirl", yaw=lambda t: -32 + 0.8 * t, pitch=lambda t: -5.0, height_deg=55,
               disparity=lambda t: 9.0 + 0.35 * t),
        Person("davis2016_parkour", yaw=lambda t: 30 - 0.5 * t, pitch=lambda t: 4.0, height_deg=40,
               disparity=lambda t: 5.5 - 0.15 * t, frame_offset=20),
    ]
    return make_clip(persons, frames=frames, size=size)


def _key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class GTDetector:
    """Detector test double: returns the ground-truth boxes of images it was told about (eyes and SBS).

    Unknown images (e.g. perspective crops) give no detections. Scores are 0.9.
    """

    name = "gt-detector"

    def __init__(self, clip: StereoClip):
        self.table: dict[str, list[np.ndarray]] = {}
        self.calls = 0
        for t in range(clip.frames):
            lb = [b for b in clip.boxes_left[t] if b is not None]
            rb = [b for b in clip.boxes_right[t] if b is not None]
            li, ri = clip.tensors(t)
            self.table[_key(li)] = lb
            self.table[_key(ri)] = rb
            sbs = torch.cat([li, ri], dim=1)
            self.table[_key(sbs)] = lb + [b + np.float32([clip.size, 0, clip.size, 0]) for b in rb]

    def detect(self, image: torch.Tensor) -> list[Detection]:
        self.calls += 1
        return [Detection(box=b.copy(), score=0.9) for b in self.table.get(_key(image), [])]


class GTSegmenter:
    """Segmenter test double for one eye: a person's ground-truth mask cropped by the track's box.

    A prompt binds the track to the ground-truth person its box overlaps most; the output is that person's mask
    inside the track's box expanded by ``margin`` (the box then follows the returned mask, so a moving person stays
    inside). A badly placed prompt therefore gives a truncated mask: the seeding logic under test is real.
    ``corrupt``: {frame: fraction} blanks the top ``fraction`` of every mask on that frame (a segmenter failure the
    stereo validation must catch).
    """

    name = "gt-segmenter"

    def __init__(self, gt: np.ndarray, margin: float = 0.15, corrupt: dict[int, float] | None = None):
        self.gt = torch.from_numpy(gt)  # (T, P, H, W)
        self.margin = margin
        self.corrupt = corrupt or {}
        self.boxes: dict[int, np.ndarray] = {}
        self.person: dict[int, int | None] = {}
        self._pending: set[int] = set()
        self.prompts: list[tuple[int, np.ndarray | None, bool]] = []
        self.own_box_prompts = 0  # prompts flagged box_is_mask (checked against their masks)

    def add_prompt(self, track_id: int, box: np.ndarray | None = None, mask: torch.Tensor | None = None,
                   box_is_mask: bool = False) -> None:
        if box is None and mask is not None:
            box = mask_box(mask.detach().cpu().numpy())
        self.prompts.append((track_id, None if box is None else np.asarray(box, np.float32), mask is not None))
        if box_is_mask:  # the contract (engines/base.py): the box is the mask's own, so the mask is not empty
            own = mask_box(mask.detach().cpu().numpy())
            assert own is not None and np.allclose(own, box, atol=1.0), (own, box)
            self.own_box_prompts += 1
        if box is not None:
            self.boxes[track_id] = np.asarray(box, np.float32)
            self._pending.add(track_id)

    def remove_track(self, track_id: int) -> None:
        self.boxes.pop(track_id, None)
        self.person.pop(track_id, None)

    def reset(self) -> None:
        self.boxes.clear()
        self.person.clear()

    def _bind(self, frame_idx: int, box: np.ndarray) -> int | None:
        x0, y0 = int(max(0, box[0])), int(max(0, box[1]))
        x1, y1 = int(math.ceil(box[2])), int(math.ceil(box[3]))
        cover = self.gt[frame_idx, :, y0:y1, x0:x1].flatten(1).sum(1)
        return int(cover.argmax()) if float(cover.max()) > 0 else None

    def segment(self, frame_idx: int, image: torch.Tensor) -> dict[int, torch.Tensor]:
        H, W = self.gt.shape[-2:]
        out = {}
        for tid, b in list(self.boxes.items()):
            if tid in self._pending:
                self.person[tid] = self._bind(frame_idx, b)
        self._pending.clear()
        for tid, b in list(self.boxes.items()):
            m = torch.zeros((H, W))
            k = self.person.get(tid)
            if k is not None:
                mx = self.margin * (b[2] - b[0]) + 4
                my = self.margin * (b[3] - b[1]) + 4
                x0, y0 = int(max(0, math.floor(b[0] - mx))), int(max(0, math.floor(b[1] - my)))
                x1, y1 = int(min(W, math.ceil(b[2] + mx))), int(min(H, math.ceil(b[3] + my)))
                m[y0:y1, x0:x1] = self.gt[frame_idx, k, y0:y1, x0:x1]
            nb = mask_box(m.numpy())
            if frame_idx in self.corrupt and nb is not None:
                cut = int(nb[1] + self.corrupt[frame_idx] * (nb[3] - nb[1]))
                m[:cut] = 0
            out[tid] = m.to(image.device)
            if nb is not None:
                self.boxes[tid] = nb
        return out


def parkour_background(size: int) -> np.ndarray:
    """A real background with nobody in it: DAVIS parkour frame 0 with the runner inpainted away, resized to a
    ``size``-high image (wider than high), float32 RGB."""
    frames, masks = davis_frames("davis2016_parkour", 1)
    rgb = cv2.cvtColor(cv2.imread(str(frames[0])), cv2.COLOR_BGR2RGB)
    m = cv2.dilate((cv2.imread(str(masks[0]), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8), np.ones((15, 15)))
    clean = cv2.inpaint(rgb, m, 7, cv2.INPAINT_TELEA)
    w = int(round(clean.shape[1] * size / clean.shape[0]))
    return cv2.resize(clean, (w, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def pasted(size: int, people: list[tuple[str, int, float, float, float, float]], identical: bool = False
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One stereo frame of DAVIS people pasted flat into :func:`parkour_background`: ``people`` as
    ``(sequence, source frame, width px, x, y, disparity)``; the right eye has each person ``disparity`` px to the
    left (the background 1 px), or is the left eye itself when ``identical``. Returns (left, right, gt_left,
    gt_right) with (P, H, W) boolean visible masks (nearer people, larger disparity, occlude farther ones)."""
    bg = parkour_background(size)
    x0 = (bg.shape[1] - size) // 2
    out, gts = [], []
    order = np.argsort([p[5] for p in people])
    for eye in ("l", "r"):
        img = cv2.warpAffine(bg, np.float32([[1, 0, -x0 + (1.0 if eye == "r" else 0.0)], [0, 1, 0]]), (size, size))
        gt = np.zeros((len(people), size, size), np.float32)
        for k in order:
            seq, idx, width, x, y, d = people[k]
            rgb, a = sprite(seq, idx)
            s = width / a.shape[1]
            M = np.float32([[s, 0, x - (d if eye == "r" else 0.0)], [0, s, y]])
            col = cv2.warpAffine(rgb, M, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            al = cv2.warpAffine(a, M, (size, size))
            img = img * (1 - al[..., None]) + col * al[..., None]
            gt *= (1 - al)[None]
            gt[k] = np.maximum(gt[k], al)
        out.append(np.clip(img, 0, 255).round().astype(np.uint8))
        gts.append(gt > 0.5)
    if identical:
        out[1], gts[1] = out[0].copy(), gts[0].copy()
    return out[0], out[1], gts[0], gts[1]
