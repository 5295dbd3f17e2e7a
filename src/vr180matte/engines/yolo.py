"""YOLOv8 person detector (ultralytics) for the det-sam2 and mobilesam engines.

Why not ``YOLO.predict``: the predictor takes BGR numpy images (a device -> host copy per frame and a channel
flip), letterboxes with OpenCV on the CPU and builds ``Results`` objects we do not need. Frames here are
already RGB tensors on the processing device, so we letterbox on the device, run the ultralytics
``DetectionModel`` directly and use ultralytics' own ``non_max_suppression`` restricted to the person class(es).

Small and distant people: the whole eye letterboxed to the network input (640 px) turns a 60 px person of a
3072 px eye into a 12 px speck that YOLO does not report. So the detector looks at the eye at a *detection
resolution* of its own (``detection.image_size`` source pixels at most, up to ``detection.upscale`` times the source
for small web eyes), independent of ``processing.scale_factor``, and when that image is larger than the network
input it is cut into overlapping tiles (batched through the network). Tile boxes are merged with the whole-eye
pass: fragments of a person cut by a tile border are joined, then one class-agnostic NMS over everything.

Checkpoints are data: they are unpickled with ``torch.load(weights_only=True)``, allowing only the module classes
of ``ultralytics.nn`` and ``torch.nn`` that the file names (ultralytics' own loader unpickles anything).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vr180matte.compat.torchvision_ops import ensure_torchvision_ops, nms_reference
from vr180matte.engines.base import Detection, EngineError

log = logging.getLogger(__name__)

PERSON_CLASS = 0  # COCO "person"
# Modules a YOLOv8 checkpoint may name; anything else in the pickle is refused (it could run code).
_SAFE_PREFIXES = ("ultralytics.nn.", "torch.nn.modules.", "torch.nn.parameter.", "collections.OrderedDict")
BUNDLED_MAX_THRESHOLD = 0.6  # det-sam2 / mobilesam with the bundled detector (the embedded engine uses 0.5 + checks)
TILE_OVERLAP = 0.3  # share of a tile repeated in its neighbour: people up to this size fit whole in one tile
_EDGE_PX = 2.0  # minimum gap for "goes past a border" when joining
# A box side within this share of the tile of an inner tile border was cut by it: YOLO boxes of a body that runs
# off the tile stop a few pixels short of the edge (measured on the bedroom clip: up to ~20 px of 640).
_CUT_FRAC = 0.04
_PASS_CONF = 0.25  # candidates kept by the whole-eye pass before merging; the threshold applies after the merge


def load_checkpoint_model(path: Path) -> torch.nn.Module:
    """The ``DetectionModel`` in an ultralytics ``.pt``, unpickled with ``weights_only=True``.

    Only the classes the file itself names are allowed, and only when they are ultralytics/torch modules, so a
    tampered file fails with a one-line EngineError instead of running code.
    """
    import importlib

    ensure_torchvision_ops()  # the ultralytics modules named below import torchvision
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # noqa: BLE001 - a truncated/garbage file raises many types
        raise EngineError(f"cannot load YOLO weights {path}: {_first_line(exc)}; delete the file and download again") from None
    bad = [n for n in names if not n.startswith(_SAFE_PREFIXES)]
    if bad:
        raise EngineError(f"cannot load YOLO weights {path}: it names non-model objects ({', '.join(bad[:3])}); "
                          "use an official ultralytics checkpoint")
    allowed = []
    for n in names:
        mod, _, attr = n.rpartition(".")
        try:
            allowed.append(getattr(importlib.import_module(mod), attr))
        except (ImportError, AttributeError):
            raise EngineError(f"cannot load YOLO weights {path}: {n} is not in the installed ultralytics; "
                              "upgrade ultralytics or use another checkpoint") from None
    try:
        with torch.serialization.safe_globals(allowed):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"cannot load YOLO weights {path}: {_first_line(exc)}; delete the file and download again") from None
    net = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(net, torch.nn.Module):
        raise EngineError(f"cannot load YOLO weights {path}: no model inside; use an official ultralytics checkpoint")
    return net


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def tile_grid(h: int, w: int, tile: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """Overlapping ``tile`` x ``tile`` windows (x0, y0, x1, y1) covering an ``h`` x ``w`` image, evenly spread.

    A side no longer than ``tile`` gets one window (clipped to the image); otherwise neighbours share at least
    ``overlap * tile`` pixels.
    """
    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        step = tile * (1.0 - overlap)
        k = math.ceil((n - tile) / step) + 1
        return [round(i * (n - tile) / (k - 1)) for i in range(k)]

    return [(x, y, min(w, x + tile), min(h, y + tile)) for y in starts(h) for x in starts(w)]


def merge_tiled_boxes(
    boxes: np.ndarray, scores: np.ndarray, cut: np.ndarray, iou_threshold: float = 0.5, inside: float = 0.7,
    join_overlap: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge boxes from overlapping tiles (and a whole-image pass) into one box per person.

    ``cut``: (N, 4) bool, which sides (x0, y0, x1, y1) of each box lie on an inner tile border (the person goes on
    past it). Steps: (1) join: a box cut on one side and another box that reaches past that border and overlaps it
    along the border by ``join_overlap`` (1-D IoU) are one person cut in two: replaced by their union (repeated
    until nothing joins); (2) a cut box lying mostly (``inside``) inside another box is a fragment: dropped;
    (3) class-agnostic NMS at ``iou_threshold``. Returns (boxes, scores), best first.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    scores = np.asarray(scores, np.float32).reshape(-1).copy()
    cut = np.asarray(cut, bool).reshape(-1, 4).copy()
    alive = np.ones(len(boxes), bool)

    def overlap1d(a0, a1, b0, b1):
        inter = max(0.0, min(a1, b1) - max(a0, b0))
        union = max(a1, b1) - min(a0, b0)
        return inter / union if union > 0 else 0.0

    changed = True
    while changed:
        changed = False
        for i in range(len(boxes)):
            if not alive[i] or not cut[i].any():
                continue
            a = boxes[i]
            for j in range(len(boxes)):
                if j == i or not alive[j]:
                    continue
                b = boxes[j]
                # Both must be fragments cut facing each other (a on its right, b on its left, ...) and overlap
                # across the border: two whole people side by side are never cut, so they are never joined.
                join = False
                if cut[i, 2] and cut[j, 0] and b[2] > a[2] + _EDGE_PX and b[0] < a[2]:
                    join = overlap1d(a[1], a[3], b[1], b[3]) >= join_overlap
                elif cut[i, 3] and cut[j, 1] and b[3] > a[3] + _EDGE_PX and b[1] < a[3]:
                    join = overlap1d(a[0], a[2], b[0], b[2]) >= join_overlap
                if join:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    scores[i] = max(scores[i], scores[j])
                    # The union is cut only where both were cut on the side that survives.
                    cut[i] = [cut[i, 0] if a[0] <= b[0] else cut[j, 0], cut[i, 1] if a[1] <= b[1] else cut[j, 1],
                              cut[i, 2] if a[2] >= b[2] else cut[j, 2], cut[i, 3] if a[3] >= b[3] else cut[j, 3]]
                    alive[j] = False
                    changed = True
                    a = boxes[i]
    idx = np.flatnonzero(alive)
    boxes, scores, cut = boxes[idx], scores[idx], cut[idx]
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not cut[i].any() or area[i] <= 0:
            continue
        ix = np.clip(np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]), 0, None)
        frac = ix * iy / area[i]
        frac[i] = 0.0
        host = np.flatnonzero((frac > inside) & (area > area[i]))
        if host.size:
            keep[i] = False  # a fragment of a bigger box, which it vouches for: the host keeps the better score
            k = host[np.argmax(scores[host])]  # the most confident host (not the largest: a loose 0.2 box)
            scores[k] = max(scores[k], scores[i])
    boxes, scores = boxes[keep], scores[keep]
    if len(boxes) == 0:
        return boxes, scores
    # A few dozen boxes: the pure-torch reference NMS (same contract as torchvision's) needs no compiled ops.
    order = nms_reference(torch.from_numpy(boxes), torch.from_numpy(scores), iou_threshold).numpy()
    return boxes[order], scores[order]


class YoloDetector:
    """Detector protocol implementation: persons only, boxes in image pixels, best first.

    ``imgsz``: the network input side (one tile). ``person_classes``: the classes that are people (COCO: 0; the
    bundled fall-detection YOLOv8s: 0 "Normal" and 1 "Fall", both people). ``source_scale``: source pixels per
    pixel of the images :meth:`detect` gets (1 / ``processing.scale_factor``); with ``image_size`` and ``upscale``
    it sets the detection resolution (see the module docstring). ``image_size=None`` disables tiling (one pass).
    """

    name = "yolov8"

    def __init__(
        self,
        weights: Path | None,
        model: str = "yolov8n",
        confidence_threshold: float = 0.7,
        device: torch.device | str = "cpu",
        imgsz: int = 640,
        random_init: bool = False,
        iou_threshold: float = 0.7,
        max_det: int = 100,
        fp16: bool = False,
        min_box_area: float = 0.0,
        person_classes: tuple[int, ...] = (PERSON_CLASS,),
        image_size: int | None = None,
        upscale: float = 1.0,
        source_scale: float = 1.0,
        tile_batch: int = 8,
        source: str | None = None,
    ):
        """``random_init`` builds ``{model}.yaml`` with random weights (tests); otherwise ``weights`` is loaded."""
        ensure_torchvision_ops()

        self.device = torch.device(device)
        self.confidence_threshold = float(confidence_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_det = int(max_det)
        self.min_box_area = float(min_box_area)  # fraction of the image area; smaller boxes are dropped
        self.person_classes = tuple(int(c) for c in person_classes)
        self.image_size = None if image_size is None else int(image_size)
        self.upscale = float(upscale)
        self.source_scale = float(source_scale)
        self.tile_batch = max(1, int(tile_batch))
        self.weights = None if weights is None else Path(weights)
        self.source = source or ("random" if random_init else "file")
        self.stats = {"calls": 0, "tiles": 0, "tile_boxes": 0, "joined_or_dropped": 0}
        self.last_tiles = 0
        if random_init:
            from ultralytics import YOLO

            net = YOLO(f"{model}.yaml", task="detect").model
        else:
            if weights is None:
                raise EngineError(f"no weights given for detector {model}: pass the path from resolve_weights()")
            net = load_checkpoint_model(Path(weights))
        if not isinstance(net, torch.nn.Module):
            raise EngineError(f"{weights} is not a PyTorch YOLO model")
        net = net.float().to(self.device).eval()
        fuse = getattr(net, "fuse", None)
        if callable(fuse):  # BatchNorm folded into the convolutions, as ultralytics' own predictor does: ~10% less time
            net = fuse(verbose=False)
        # Half precision only where it is fast and safe (CUDA).
        self.half = bool(fp16 and self.device.type == "cuda")
        if self.half:
            net = net.half()
        self.net = net
        self.stride = int(max(int(net.stride.max()), 32)) if hasattr(net, "stride") else 32
        self.imgsz = int(math.ceil(imgsz / self.stride) * self.stride)
        names = getattr(net, "names", None) or {}
        self.class_names = {int(k): str(v) for k, v in dict(names).items()}
        if self.person_classes == (PERSON_CLASS,) and names and names.get(PERSON_CLASS, "person") != "person":
            log.warning("class 0 of %s is %r, not 'person'", weights or model, names.get(PERSON_CLASS))

    @property
    def info(self) -> dict:
        """What stats.json says about this detector."""
        return {
            "weights": None if self.weights is None else str(self.weights),
            "source": self.source,
            "classes": {str(c): self.class_names.get(c, str(c)) for c in self.person_classes},
            "input": self.imgsz,
            "image_size": self.image_size,
            "upscale": self.upscale,
            **self.stats,
        }

    def _letterbox(self, image: torch.Tensor) -> tuple[torch.Tensor, float, tuple[int, int]]:
        """(1,3,h,w) float batch scaled to fit imgsz, padded to a stride multiple; returns gain and (pad_x, pad_y)."""
        if image.dim() != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {tuple(image.shape)}")
        H, W = image.shape[:2]
        x = image.to(self.device, non_blocking=True).permute(2, 0, 1)[None].float().div_(255.0)
        gain = min(self.imgsz / H, self.imgsz / W)
        h, w = max(1, round(H * gain)), max(1, round(W * gain))
        if (h, w) != (H, W):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=gain < 1)
        ph = math.ceil(h / self.stride) * self.stride - h
        pw = math.ceil(w / self.stride) * self.stride - w
        top, left = ph // 2, pw // 2
        x = F.pad(x, (left, pw - left, top, ph - top), value=114 / 255.0)
        return x, gain, (left, top)

    def _nms(self, preds, classes, conf: float | None = None) -> list[torch.Tensor]:
        from ultralytics.utils.nms import non_max_suppression

        # Class-agnostic: "Normal" and "Fall" boxes on the same person are one person.
        return non_max_suppression(
            preds,
            conf_thres=self.confidence_threshold if conf is None else conf,
            iou_thres=self.iou_threshold,
            classes=list(classes) if classes is not None else None,
            agnostic=True,
            max_det=self.max_det,
        )

    @torch.inference_mode()
    def raw_detections(self, image: torch.Tensor, classes: list[int] | None = (), conf: float | None = None) -> torch.Tensor:
        """(N, 6) rows ``x0 y0 x1 y1 score cls`` in image pixels after NMS, one whole-image pass (no tiles).

        ``classes``: () = the person classes, None = every class.
        """
        classes = self.person_classes if classes == () else classes
        H, W = image.shape[:2]
        x, gain, (left, top) = self._letterbox(image)
        if self.half:
            x = x.half()
        out = self._nms(self.net(x), classes, conf)[0].float()
        boxes = out[:, :4]
        boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - left) / gain).clamp(0, W)
        boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - top) / gain).clamp(0, H)
        return out[:, :6]

    def detection_zoom(self, h: int, w: int) -> float:
        """Pixels of the detection image per pixel of an ``h`` x ``w`` input (1.0 when tiling is off).

        The zoom is set by the *eye*, the largest image this detector has been given (its short side, so a joint
        side-by-side frame counts as one eye high): the eye side becomes ``min(image_size, upscale x its source
        size)``. Smaller images (the equirect perspective crops) get the same zoom, i.e. the eye's pixel density,
        not a zoom of their own that would multiply their tiles.
        """
        if self.image_size is None:
            return 1.0
        self._eye_side = max(getattr(self, "_eye_side", 0), min(h, w))
        return min(float(self.image_size) / self._eye_side, self.upscale * self.source_scale)

    @torch.inference_mode()
    def tiled_detections(self, image: torch.Tensor, conf: float | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes in image pixels, scores, cut sides) from tiles of the image at the detection resolution.

        Empty when the detection image fits the network input (the whole-image pass already sees it all).
        ``conf``: the tiles' score floor (default the threshold).
        """
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 4), bool))
        H, W = image.shape[:2]
        zoom = self.detection_zoom(H, W)
        dh, dw = max(1, round(H * zoom)), max(1, round(W * zoom))
        if max(dh, dw) <= self.imgsz * 1.15:  # one pass at the network input is the same resolution
            self.last_tiles = 0
            return empty
        x = image.to(self.device, non_blocking=True).permute(2, 0, 1)[None].float().div_(255.0)
        if (dh, dw) != (H, W):
            x = F.interpolate(x, size=(dh, dw), mode="bilinear", align_corners=False, antialias=zoom < 1)
        if self.half:
            x = x.half()
        tiles = tile_grid(dh, dw, self.imgsz)
        self.last_tiles = len(tiles)
        self.stats["tiles"] += len(tiles)
        rows_b, rows_s, rows_c = [], [], []
        for k in range(0, len(tiles), self.tile_batch):
            group = tiles[k : k + self.tile_batch]
            batch = x.new_full((len(group), 3, self.imgsz, self.imgsz), 114 / 255.0)
            for i, (x0, y0, x1, y1) in enumerate(group):
                batch[i, :, : y1 - y0, : x1 - x0] = x[0, :, y0:y1, x0:x1]
            for (x0, y0, x1, y1), out in zip(group, self._nms(self.net(batch), self.person_classes, conf)):
                if out.shape[0] == 0:
                    continue
                out = out.float().cpu().numpy()
                b = out[:, :4].copy()
                b[:, [0, 2]] = (b[:, [0, 2]].clip(0, x1 - x0) + x0)
                b[:, [1, 3]] = (b[:, [1, 3]].clip(0, y1 - y0) + y0)
                # Sides on a border shared with another tile: the person may go on in the neighbour.
                e = _CUT_FRAC * self.imgsz
                c = np.stack([
                    (b[:, 0] <= x0 + e) & (x0 > 0), (b[:, 1] <= y0 + e) & (y0 > 0),
                    (b[:, 2] >= x1 - e) & (x1 < dw), (b[:, 3] >= y1 - e) & (y1 < dh),
                ], axis=1)
                # A cut box that another tile holds whole was seen uncut there: that tile's own box (if any) stands
                # for the object, and a fragment it did not confirm is a border artefact (a bed edge, a curtain).
                whole = np.array([
                    any(tx0 <= bb[0] and ty0 <= bb[1] and bb[2] <= tx1 and bb[3] <= ty1 and (tx0, ty0) != (x0, y0)
                        for tx0, ty0, tx1, ty1 in tiles)
                    for bb in b
                ], dtype=bool)
                keep = ~(c.any(axis=1) & whole)
                rows_b.append(b[keep] / zoom)
                rows_s.append(out[keep, 4])
                rows_c.append(c[keep])
        if not rows_b:
            return empty
        boxes = np.concatenate(rows_b).astype(np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, W)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, H)
        self.stats["tile_boxes"] += len(boxes)
        return boxes, np.concatenate(rows_s).astype(np.float32), np.concatenate(rows_c)

    #: ``detect`` takes ``threshold=``: the stereo stage asks for candidates below the threshold (stereo/vouch.py)
    supports_threshold = True

    def detect(self, image: torch.Tensor, threshold: float | None = None) -> list[Detection]:
        """All persons with score >= ``threshold`` (default ``confidence_threshold``), best first: whole-image pass
        plus tiles, merged."""
        self.stats["calls"] += 1
        thr = self.confidence_threshold if threshold is None else float(threshold)
        # The whole-eye pass keeps candidates down to _PASS_CONF: a whole-body box just under the threshold must
        # survive until a confident tile fragment of the same person vouches for it (merge); the threshold applies
        # after that. Tiles keep the threshold, so only confident fragments are joined or vouch.
        rows = self.raw_detections(image, conf=min(thr, _PASS_CONF)).cpu().numpy()
        boxes, scores = rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32)
        tb, ts, tc = self.tiled_detections(image, conf=thr)
        if len(tb):
            n_in = len(boxes) + len(tb)
            boxes, scores = merge_tiled_boxes(
                np.concatenate([boxes, tb]), np.concatenate([scores, ts]),
                np.concatenate([np.zeros((len(boxes), 4), bool), tc]), iou_threshold=0.5,
            )
            self.stats["joined_or_dropped"] += n_in - len(boxes)
        order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= thr]
        min_area = self.min_box_area * image.shape[0] * image.shape[1]
        dets = []
        for i in order[: self.max_det]:
            box = boxes[i].astype(np.float32)
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue  # degenerate after clipping to the image
            if (box[2] - box[0]) * (box[3] - box[1]) < min_area:
                continue  # too small to matte usefully (distant specks, false positives)
            dets.append(Detection(box=box, score=float(scores[i])))
        return dets


def yolo_for(cfg, weights: Path | None, device, *, random_init: bool = False, source: str | None = None,
             person_classes: tuple[int, ...] = (PERSON_CLASS,), model: str | None = None) -> YoloDetector:
    """The configured YOLOv8 person detector (``detection.*``, fp16), with tiling at the detection resolution."""
    det = cfg.detection
    return YoloDetector(
        weights,
        model=model or det.model,
        confidence_threshold=det.confidence_threshold,
        device=device,
        imgsz=int(det.tile_size),
        random_init=random_init,
        fp16=bool(cfg.matting.fp16),
        min_box_area=det.min_box_area,
        person_classes=person_classes,
        image_size=int(det.image_size),
        upscale=float(det.upscale),
        source_scale=1.0 / float(cfg.processing.scale_factor),
        source=source,
    )


def detector_for(cfg, device, *, random_init: bool = False) -> YoloDetector:
    """det-sam2 / mobilesam detector: the official ``{detection.model}.pt`` when present, else the bundled YOLOv8s
    (logged, and ``source`` "bundled" in stats.json), so the engines run with a trained detector out of the box."""
    from vr180matte.runtime.models import BUNDLED_DETECTOR, detector_weights

    if random_init:
        return yolo_for(cfg, None, device, random_init=True, source="random")
    weights, source = detector_weights(cfg.detection.model, cfg.models.dir)
    if source == "bundled":
        d = yolo_for(cfg, weights, device, source=source, person_classes=BUNDLED_DETECTOR.person_classes,
                     model="yolov8s")
        # This two-class model scores clearly visible people 0.6-0.85 (bedroom clip), lower than COCO YOLO, for
        # which the configured threshold is tuned; its false positives there scored <= 0.57.
        d.confidence_threshold = min(d.confidence_threshold, BUNDLED_MAX_THRESHOLD)
        return d
    return yolo_for(cfg, weights, device, source=source)


class OwnsDetector:
    """Engines that build one YOLOv8 detector in ``__init__`` (``self._detector``, ``self._detector_base``): the
    pipeline asks for it, the stereo stage owns it, stats.json reports it."""

    def make_detector(self) -> "YoloDetector":
        """The engine's YOLOv8 person detector (official weights when present, else the bundled YOLOv8s)."""
        return self._detector

    @property
    def detector_info(self) -> dict:
        """``detector`` entry of stats.json: weights, source (official | bundled | random) and tiling counters."""
        return {**self._detector_base, **self._detector.info}

    def detector_stats(self) -> dict:
        return self.detector_info
