"""Make ``import torchvision`` work when its compiled ops do not match the installed torch.

The registry's torchvision wheels are CUDA builds; next to the CPU torch their C++ ops fail to load and the
import dies with "operator torchvision::nms does not exist". ultralytics imports torchvision and uses only
``nms`` from it, so when (and only when) the compiled op is missing we define ``torchvision::nms`` with a
pure-torch CPU/CUDA implementation and log a warning. A working torchvision is left untouched.
"""
from __future__ import annotations

import logging
import sys

import numpy as np
import torch

log = logging.getLogger(__name__)
_done = False


def _greedy(order: np.ndarray, over: np.ndarray) -> np.ndarray:
    """Greedy NMS's sequential pass: ``over[i, j]`` says sorted box ``i`` suppresses sorted box ``j``."""
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[np.asarray(keep, dtype=np.int64)]


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression on host arrays: indices kept, best score first (``torchvision.ops.nms``'s
    contract). Stable sort, so equal scores keep their input order."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float32)
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    x0, y0, x1, y1 = boxes.T
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    # The pairwise IoU matrix is O(n^2) but n is the detector's candidate count (thousands at most).
    ix = np.clip(np.minimum(x1[:, None], x1[None, :]) - np.maximum(x0[:, None], x0[None, :]), 0, None)
    iy = np.clip(np.minimum(y1[:, None], y1[None, :]) - np.maximum(y0[:, None], y0[None, :]), 0, None)
    inter = ix * iy
    iou = inter / np.clip(area[:, None] + area[None, :] - inter, 1e-9, None)
    return _greedy(order, iou[order][:, order] > iou_threshold)


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; same contract as ``torchvision.ops.nms`` (indices, best first).

    The overlap matrix is built where the boxes are; the sequential pass runs on the host over one download of
    it (as torchvision's CUDA kernel does with its bit mask), not over reads of single values.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes = boxes.float()
    order = scores.argsort(descending=True, stable=True)
    x0, y0, x1, y1 = boxes.unbind(1)
    area = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    # The pairwise IoU matrix is O(n^2) but n is the detector's candidate count (thousands at most).
    xx0 = torch.maximum(x0[:, None], x0[None, :])
    yy0 = torch.maximum(y0[:, None], y0[None, :])
    xx1 = torch.minimum(x1[:, None], x1[None, :])
    yy1 = torch.minimum(y1[:, None], y1[None, :])
    inter = (xx1 - xx0).clamp(min=0) * (yy1 - yy0).clamp(min=0)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-9)
    over = torch.cat([order[:, None], iou[order][:, order] > iou_threshold], 1).cpu().numpy()
    return torch.from_numpy(_greedy(over[:, 0].astype(np.int64), over[:, 1:].astype(bool))).to(boxes.device)


def _compiled_nms_available() -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018 - attribute access resolves the op
        return True
    except (AttributeError, RuntimeError):
        return False


def ensure_torchvision_ops() -> None:
    """Idempotent. Call before importing torchvision or ultralytics."""
    global _done
    if _done:
        return
    _done = True
    if "torchvision" in sys.modules:
        return
    try:
        import torchvision.extension  # noqa: F401 - loads the compiled ops when they match torch
    except Exception:  # noqa: BLE001 - a broken extension is exactly the case handled below
        pass
    if _compiled_nms_available():
        return
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", nms_reference, "CPU")
    lib.impl("nms", nms_reference, "CUDA")
    # torchvision registers a fake kernel for the quantized variant at import time too, so it must exist.
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("qnms", lambda d, s, t: nms_reference(d.dequantize(), s.dequantize(), t), "CPU")
    # Keep the library object alive for the life of the process.
    ensure_torchvision_ops._lib = lib  # type: ignore[attr-defined]
    import torchvision.ops
    import torchvision.ops.boxes as boxes

    # torchvision.ops.nms refuses to run when its extension failed to load, even though the op now exists;
    # route the Python entry points (batched_nms calls boxes.nms) straight to the op.
    def nms(boxes_: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        return torch.ops.torchvision.nms(boxes_, scores, iou_threshold)

    boxes.nms = nms
    torchvision.ops.nms = nms
    log.warning(
        "torchvision's compiled ops do not match this torch build; using a pure-torch nms "
        "(install a torchvision built for torch %s to silence this)",
        torch.__version__,
    )
