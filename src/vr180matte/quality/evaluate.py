"""``vr180matte evaluate OUTPUT GT``: compare an alpha output with ground-truth masks or mattes.

OUTPUT: an alpha video (ProRes 4444 .mov, VP9-alpha .webm, any stream whose pixel format has alpha) or a
folder of PNGs (RGBA: the alpha channel; grey: the matte). GT: a folder of PNG masks/mattes, a DAVIS
sequence folder (``Annotations/``), or a folder with ``left/`` and ``right/`` subfolders. With
``layout="sbs"`` the output frames hold both eyes side by side; a GT image as wide as the whole SBS frame is
split the same way, one as wide as an eye is used for that eye (the same GT serves both eyes when there is
no left/right split). Frames pair up in sorted order; extra frames on either side are ignored (with a
warning). Metrics per eye: IoU, boundary F, MAD (x1e3), dtSSD (x1e2), see :mod:`vr180matte.quality.metrics`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from vr180matte.quality.metrics import boundary_f, dtssd, iou, mad
from vr180matte.io.layouts import LAYOUTS, get_layout

log = logging.getLogger(__name__)

EYES = ("left", "right")


class EvaluateError(ValueError):
    """Bad evaluate input; the message says what to pass instead."""


def _gt_alpha(path: Path) -> np.ndarray:
    """GT image -> float alpha in [0, 1]: RGBA alpha channel; colour/palette -> any non-zero; grey: labels
    (small integer ids) -> non-zero, else value / 255 (a soft matte)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise EvaluateError(f"cannot read ground-truth image {path}")
    if img.ndim == 3 and img.shape[2] == 4:
        a = img[..., 3]
    elif img.ndim == 3:
        return (img.max(axis=2) > 0).astype(np.float32)
    else:
        a = img
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.max() <= 20:  # object-id labels (DAVIS 2017 style)
        return (a > 0).astype(np.float32)
    return a.astype(np.float32) / 255.0


def _out_png_alpha(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise EvaluateError(f"cannot read output image {path}")
    if img.ndim == 3 and img.shape[2] == 4:
        a = img[..., 3]
    elif img.ndim == 2:
        a = img
    else:
        raise EvaluateError(f"{path} has no alpha channel: evaluate needs RGBA or grey matte PNGs (output.format=alpha)")
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    return a.astype(np.float32) / scale


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")


def _video_alpha(path: Path) -> Iterator[np.ndarray]:
    """Alpha planes of a video as float [0, 1], read at the stream's own bit depth."""
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise EvaluateError(f"{path} has no video stream")
        st = c.streams.video[0]
        if st.codec_context.name == "vp9":
            # FFmpeg's native vp9 decoder drops the alpha side data; libvpx-vp9 reads it back
            ctx = av.CodecContext.create("libvpx-vp9", "r")
            frames = (f for pkt in c.demux(st) for f in ctx.decode(pkt))
        else:
            frames = c.decode(st)
        for frame in frames:
            fmt = frame.format
            has_alpha = getattr(fmt, "has_alpha", None)
            if has_alpha is None:
                has_alpha = fmt.name.startswith(("yuva", "rgba", "bgra", "argb", "abgr", "gbrap", "ya"))
            if not has_alpha:
                raise EvaluateError(f"{path} has no alpha channel ({fmt.name}); evaluate needs an alpha output "
                                    "(output.format=alpha, codec prores4444 or png)")
            if fmt.name.startswith("yuva") and fmt.name.endswith("le") and "p1" in fmt.name:
                bits = int(fmt.name.split("p")[-1][:-2])  # yuva444p10le -> 10
                plane = frame.planes[3]
                arr = np.frombuffer(plane, dtype=np.uint16).reshape(plane.height, plane.line_size // 2)
                yield arr[:, : plane.width].astype(np.float32) / float((1 << bits) - 1)
            else:
                yield frame.to_ndarray(format="rgba")[..., 3].astype(np.float32) / 255.0


def _output_frames(output: Path) -> Iterator[np.ndarray]:
    if output.is_dir():
        files = _pngs(output)
        if not files:
            raise EvaluateError(f"no PNG files in {output}")
        return (_out_png_alpha(p) for p in files)
    if not output.exists():
        raise EvaluateError(f"output {output} does not exist")
    return _video_alpha(output)


def _gt_sources(gt: Path) -> dict[str, list[Path]] | list[Path]:
    if not gt.is_dir():
        raise EvaluateError(f"ground truth {gt} must be a folder of PNGs, a DAVIS sequence or left/ + right/ folders")
    if (gt / "Annotations").is_dir():
        gt = gt / "Annotations"
        while not _pngs(gt) and len([d for d in gt.iterdir() if d.is_dir()]) == 1:
            gt = next(d for d in gt.iterdir() if d.is_dir())
    if (gt / "left").is_dir() and (gt / "right").is_dir():
        return {e: _pngs(gt / e) for e in EYES}
    files = _pngs(gt)
    if not files:
        raise EvaluateError(f"no PNG masks in {gt}")
    return files


def _split(a: np.ndarray, layout: str) -> dict[str, np.ndarray]:
    lay = get_layout(layout)
    if not lay.stereo:
        return {"left": a, "right": a}
    return dict(zip(EYES, lay.split(a)))


def evaluate(output: Path, gt: Path, *, eye: str = "both", layout: str = "sbs") -> dict:
    """Per-eye ``{"iou", "boundary_f", "mad", "dtssd", "frames"}`` plus ``"mean"`` over the evaluated eyes."""
    output, gt = Path(output), Path(gt)
    if eye not in ("left", "right", "both"):
        raise EvaluateError(f"--eye must be left, right or both, got {eye!r}")
    if layout not in LAYOUTS:
        raise EvaluateError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    eyes = list(EYES) if eye == "both" else [eye]
    if layout == "mono" and eye == "both":
        eyes = ["left"]
    src = _gt_sources(gt)
    n_gt = min(len(v) for v in src.values()) if isinstance(src, dict) else len(src)
    acc = {e: {"iou": [], "boundary_f": [], "mad": [], "dtssd": []} for e in eyes}
    prev: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    n = 0
    for i, out_a in enumerate(_output_frames(output)):
        if i >= n_gt:
            log.warning("output has more frames than the ground truth (%d); extra frames ignored", n_gt)
            break
        views = _split(out_a, layout)
        for e in eyes:
            g = _gt_alpha(src[e][i] if isinstance(src, dict) else src[i])
            p = views[e]
            if g.shape == out_a.shape and get_layout(layout).stereo and g.shape != p.shape:
                g = _split(g, layout)[e]
            if g.shape != p.shape:
                raise EvaluateError(f"frame {i}: output eye {p.shape[1]}x{p.shape[0]} and ground truth "
                                    f"{g.shape[1]}x{g.shape[0]} differ in size; pass --layout mono for one-eye outputs")
            a = acc[e]
            a["iou"].append(iou(p, g))
            a["boundary_f"].append(boundary_f(p, g))
            a["mad"].append(mad(p, g))
            if e in prev:
                a["dtssd"].append(dtssd(prev[e][0], p, prev[e][1], g))
            prev[e] = (p, g)
        n += 1
    if n == 0:
        raise EvaluateError(f"no frames decoded from {output}")
    if n < n_gt:
        log.warning("output has %d frames, ground truth %d: evaluated the first %d", n, n_gt, n)
    result: dict = {}
    for e in eyes:
        result[e] = {k: (round(float(np.mean(v)), 5) if v else None) for k, v in acc[e].items()}
        result[e]["frames"] = n
    keys = ("iou", "boundary_f", "mad", "dtssd")
    result["mean"] = {
        k: (round(float(np.mean([result[e][k] for e in eyes if result[e][k] is not None])), 5)
            if any(result[e][k] is not None for e in eyes) else None)
        for k in keys
    }
    result["mean"]["frames"] = n
    return result


def format_table(result: dict) -> str:
    rows = [k for k in result if k != "mean"] + ["mean"]
    lines = [f"{'eye':<6} {'frames':>6} {'IoU':>8} {'BoundF':>8} {'MADx1e3':>9} {'dtSSDx1e2':>10}"]
    fmt = lambda v, w: f"{v:>{w}.4f}" if v is not None else f"{'-':>{w}}"  # noqa: E731
    for r in rows:
        d = result[r]
        lines.append(f"{r:<6} {d['frames']:>6} {fmt(d['iou'], 8)} {fmt(d['boundary_f'], 8)} {fmt(d['mad'], 9)} "
                     f"{fmt(d['dtssd'], 10)}")
    return "\n".join(lines)
