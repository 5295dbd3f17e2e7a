"""Debug views: the detection-visualisation video and per-pixel confidence maps.

The detection video is small on purpose (longest side ``max_side``, H.264): it is for looking at what the
detector and the tracker did, per eye, not for grading. Boxes of TrackMasks and Detections are in
processing-resolution pixels; the scale to the full-resolution eye is taken from the track's mask shape
(exact), else from ``scale`` (the processing scale factor), else 1.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from vr180matte.engines.base import FrameMatte

log = logging.getLogger(__name__)

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def _color(track_id: int) -> tuple[int, int, int]:
    return _PALETTE[track_id % len(_PALETTE)]


class DetectionVisualizer:
    """Writes ``<stem>.detections.mp4``: each eye with track masks tinted, track boxes with ``#id score``,
    raw detections as thin white boxes with their score."""

    def __init__(self, path: Path, width: int, height: int, fps, max_side: int = 1280, scale: float | None = None):
        self.path = Path(path)
        f = min(1.0, max_side / max(width, height))
        self.w = max(2, int(round(width * f / 2)) * 2)
        self.h = max(2, int(round(height * f / 2)) * 2)
        self.src_w, self.src_h = width, height
        self.scale = scale
        rate = Fraction(fps).limit_denominator(100000) if not isinstance(fps, Fraction) else fps
        self._out = av.open(str(self.path), "w")
        self._stream = self._out.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.w, self.h, "yuv420p"
        self._stream.options = {"preset": "veryfast", "crf": "23"}
        self.frames = 0

    def _draw_eye(self, img: np.ndarray, fm: FrameMatte, eye_w_src: int, eye_h_src: int) -> None:
        h, w = img.shape[:2]
        proc_scale = None
        for tm in fm.tracks.values():
            proc_scale = (tm.prob.shape[1] / eye_w_src, tm.prob.shape[0] / eye_h_src)
            break
        if proc_scale is None:
            s = self.scale or 1.0
            proc_scale = (s, s)
        fx, fy = w / (eye_w_src * proc_scale[0]), h / (eye_h_src * proc_scale[1])
        for tid, tm in sorted(fm.tracks.items()):
            m = tm.prob.detach().float()
            m = torch.nn.functional.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            m = m.cpu().numpy()[..., None]
            img[:] = (img * (1 - 0.35 * m) + np.array(_color(tid)) * 0.35 * m).astype(np.uint8)
        th = max(1, h // 300)
        font = max(0.35, h / 900)
        for d in fm.detections:
            x0, y0, x1, y1 = (d.box * [fx, fy, fx, fy]).astype(int)
            cv2.rectangle(img, (x0, y0), (x1, y1), (255, 255, 255), th)
            cv2.putText(img, f"{d.score:.2f}", (x0 + 2, y1 - 4), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), th)
        for tid, tm in sorted(fm.tracks.items()):
            if tm.box is None:
                continue
            x0, y0, x1, y1 = (np.asarray(tm.box) * [fx, fy, fx, fy]).astype(int)
            c = _color(tid)
            cv2.rectangle(img, (x0, y0), (x1, y1), c, th + 1)
            label = f"#{tid} {tm.score:.2f}"
            (tw, tht), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, th)
            ly = y0 if y0 - tht - 6 >= 0 else y0 + tht + 6  # label above the box, inside it at the top edge
            cv2.rectangle(img, (x0, ly - tht - 6), (x0 + tw + 4, ly), c, -1)
            cv2.putText(img, label, (x0 + 2, ly - 4), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), th)

    def write(self, sbs_rgb: np.ndarray, left: FrameMatte, right: FrameMatte | None) -> None:
        """Draw one SBS frame (H, W, 3) uint8 RGB (full resolution); ``right`` None for a mono input."""
        small = cv2.resize(np.ascontiguousarray(sbs_rgb), (self.w, self.h), interpolation=cv2.INTER_AREA)
        if right is None:
            self._draw_eye(small, left, self.src_w, self.src_h)
        else:
            half = self.w // 2
            for fm, x0, x1 in ((left, 0, half), (right, half, self.w)):
                eye = small[:, x0:x1].copy()
                self._draw_eye(eye, fm, self.src_w // 2, self.src_h)
                small[:, x0:x1] = eye
            cv2.putText(small, f"L  frame {left.frame_idx}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
            cv2.putText(small, "R", (half + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
        frame = av.VideoFrame.from_ndarray(small, format="rgb24")
        for p in self._stream.encode(frame):
            self._out.mux(p)
        self.frames += 1

    def close(self) -> None:
        if self._out is None:
            return
        for p in self._stream.encode():
            self._out.mux(p)
        self._out.close()
        self._out = None
        log.info("detection visualisation: %s (%d frames)", self.path, self.frames)


def save_confidence_map(path: Path, prob: torch.Tensor, max_side: int = 512) -> None:
    """The segmenter's per-pixel probability as a TURBO-coloured PNG (blue = surely background, dark red =
    surely person, green/yellow = uncertain, p ~ 0.5), longest side at most ``max_side``."""
    p = prob.detach().float().clamp(0, 1)
    h, w = p.shape
    f = min(1.0, max_side / max(h, w))
    if f < 1.0:
        p = torch.nn.functional.interpolate(p[None, None], size=(max(1, round(h * f)), max(1, round(w * f))),
                                            mode="area")[0, 0]
    img = cv2.applyColorMap((p.cpu().numpy() * 255).round().astype(np.uint8), cv2.COLORMAP_TURBO)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write the confidence map {path}: check the output folder is writable")


class PersonTrace:
    """``debugging.person_trace``: where every detected person went, per eye (stats.json ``person_trace`` and the
    ``<stem>.persons.tsv`` table).

    Fed by events from the views (track/view_matter.py: ``start``, ``matched``, ``frame``, ``end``, ``dropped``;
    stereo/follow.py: ``followed``)
    and the stereo stage (``seeded``, ``agreement``, ``correction``, ``end`` with the stereo reason). Per person
    (id, shared by both eyes in the coupled stereo modes) it keeps counters and the last values only; detections
    that never became a track are kept as rows up to ``max_dropped`` (their count per reason is always exact).
    Boxes and areas are at processing resolution.
    """

    def __init__(self, max_persons: int = 10000, max_dropped: int = 2000) -> None:
        self.persons: dict[int, dict] = {}
        self.dropped: list[dict] = []
        self.dropped_counts: dict[str, int] = {}
        self.max_persons, self.max_dropped = max_persons, max_dropped
        self.truncated = False

    @staticmethod
    def _eye() -> dict:
        return {"start": None, "origin": None, "frames": 0, "segmented": 0, "prior": 0, "followed": 0, "area_px_sum": 0.0,
                "area_px_min": None, "area_px_last": 0.0, "matched": 0, "end": None, "end_reason": None}

    def _person(self, tid: int) -> dict | None:
        p = self.persons.get(tid)
        if p is None:
            if len(self.persons) >= self.max_persons:
                self.truncated = True
                return None
            p = {"id": int(tid), "det_score": None, "det_box": None, "left": self._eye(), "right": self._eye(),
                 "stereo": {"seeded": None, "disparity": None, "agreement_sum": 0.0, "agreement_n": 0,
                            "agreement_min": None, "corrections": 0}}
            self.persons[tid] = p
        return p

    def event(self, eye: str, kind: str, frame: int, tid: int | None = None, **info) -> None:
        if kind == "dropped":
            reason = str(info.get("reason"))
            self.dropped_counts[reason] = self.dropped_counts.get(reason, 0) + 1
            if len(self.dropped) < self.max_dropped:
                box = info.get("box")
                self.dropped.append({"frame": int(frame), "eye": eye, "reason": reason,
                                     "score": None if info.get("score") is None else round(float(info["score"]), 3),
                                     "box": None if box is None else [round(float(v), 1) for v in box]})
            return
        p = self._person(int(tid)) if tid is not None else None
        if p is None:
            return
        if eye == "stereo":
            st = p["stereo"]
            if kind == "seeded":
                st["seeded"] = st["seeded"] if st["seeded"] is not None else int(frame)
                st["disparity"] = round(float(info.get("disparity", 0.0)), 2)
            elif kind == "agreement":
                a = float(info["value"])
                st["agreement_sum"] += a
                st["agreement_n"] += 1
                st["agreement_min"] = a if st["agreement_min"] is None else min(st["agreement_min"], a)
            elif kind == "correction":
                st["corrections"] += 1
            return
        e = p[eye]
        if kind == "start":
            e["start"], e["origin"], e["end"], e["end_reason"] = int(frame), info.get("origin"), None, None
            if info.get("score") is not None and p["det_score"] is None:
                p["det_score"] = round(float(info["score"]), 3)
            if info.get("box") is not None and p["det_box"] is None:
                p["det_box"] = [round(float(v), 1) for v in info["box"]]
        elif kind == "matched":
            e["matched"] += 1
        elif kind == "frame":
            e["frames"] += 1
            box = info.get("box")
            if box is not None:
                area = float(info.get("area", 0.0))  # mask pixels above 0.5 (processing resolution)
                e["segmented"] += 1
                e["prior"] += int(bool(info.get("prior")))
                e["area_px_sum"] += area
                e["area_px_min"] = area if e["area_px_min"] is None else min(e["area_px_min"], area)
                e["area_px_last"] = area
        elif kind == "followed":  # a box-prior track's box moved by the detector between detections
            e["followed"] += 1
        elif kind == "end":
            e["end"], e["end_reason"] = int(frame), str(info.get("reason"))

    def summary(self) -> dict:
        """The stats.json block: per-person rows, dropped detections, and counts of each fate."""
        persons = []
        fates: dict[str, int] = {}
        for p in self.persons.values():
            row = {k: v for k, v in p.items() if k not in ("left", "right", "stereo")}
            for eye in ("left", "right"):
                e = dict(p[eye])
                n = e.pop("area_px_sum")
                e["area_px_mean"] = round(n / e["segmented"], 1) if e["segmented"] else 0.0
                e["area_px_min"] = None if e["area_px_min"] is None else round(e["area_px_min"], 1)
                e["area_px_last"] = round(e["area_px_last"], 1)
                row[eye] = e
            st = dict(p["stereo"])
            n = st.pop("agreement_n")
            st["agreement_mean"] = round(st.pop("agreement_sum") / n, 4) if n else None
            st["agreement_min"] = None if st["agreement_min"] is None else round(st["agreement_min"], 4)
            row["stereo"] = st
            fate = self._fate(row)
            row["fate"] = fate
            fates[fate] = fates.get(fate, 0) + 1
            persons.append(row)
        return {"persons": persons, "fates": fates, "dropped_detections": list(self.dropped),
                "dropped_counts": dict(self.dropped_counts), "truncated": self.truncated}

    @staticmethod
    def _fate(row: dict) -> str:
        l, r = row["left"], row["right"]
        if l["start"] is None and r["start"] is None:
            return "never_tracked"
        if l["segmented"] == 0 and r["segmented"] == 0:
            return f"never_segmented ({l['end_reason'] or r['end_reason'] or 'live'})"
        if (l["start"] is None) != (r["start"] is None) or (l["segmented"] == 0) != (r["segmented"] == 0):
            return "one_eye_only"
        return "matted"

    def write_table(self, path: Path) -> None:
        """One row per person (tab-separated), written under a temporary name and renamed."""
        cols = ["id", "fate", "det_score", "det_w", "det_h", "start_L", "origin_L", "frames_L", "segmented_L",
                "prior_L", "followed_L", "area_mean_L", "end_L", "end_reason_L", "start_R", "origin_R", "segmented_R", "end_R",
                "end_reason_R", "seeded", "disparity", "agreement_mean", "agreement_min", "corrections"]
        lines = ["\t".join(cols)]
        for row in self.summary()["persons"]:
            l, r, st, b = row["left"], row["right"], row["stereo"], row["det_box"]
            vals = [row["id"], row["fate"], row["det_score"], None if b is None else round(b[2] - b[0], 1),
                    None if b is None else round(b[3] - b[1], 1), l["start"], l["origin"], l["frames"],
                    l["segmented"], l["prior"], l["followed"], l["area_px_mean"], l["end"], l["end_reason"], r["start"],
                    r["origin"], r["segmented"], r["end"], r["end_reason"], st["seeded"], st["disparity"],
                    st["agreement_mean"], st["agreement_min"], st["corrections"]]
            lines.append("\t".join("" if v is None else str(v) for v in vals))
        for d in self.dropped:
            lines.append("\t".join(["", f"dropped:{d['reason']}", str(d["score"]), "", "", str(d["frame"]),
                                    d["eye"]] + [""] * (len(cols) - 7)))
        tmp = Path(path).with_suffix(".tsv.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)
