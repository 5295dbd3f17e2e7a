"""Loading an ultralytics YOLOv8 checkpoint as data: ``torch.load(weights_only=True)`` allowing only the module
classes of ``ultralytics.nn`` and ``torch.nn`` that the file names (ultralytics' own loader unpickles anything)."""
from __future__ import annotations

from pathlib import Path

import torch

from vr180matte.compat.torchvision_ops import ensure_torchvision_ops
from vr180matte.engines.base import EngineError

# Modules a YOLOv8 checkpoint may name; anything else in the pickle is refused (it could run code).
_SAFE_PREFIXES = ("ultralytics.nn.", "torch.nn.modules.", "torch.nn.parameter.", "collections.OrderedDict")


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


def load_detector_net(weights: Path | None, model: str, random_init: bool, device: torch.device, half: bool
                      ) -> torch.nn.Module:
    """The detection network ready to run: ``{model}.yaml`` with random weights (tests) or the checkpoint, in eval
    mode on ``device``, BatchNorm folded into the convolutions (as ultralytics' own predictor does: ~10% less
    time), half precision when ``half``, weights in channels-last layout (NHWC). Why NHWC: oneDNN's CPU
    convolutions run a batch of 8 tiles ~25% faster on it (2-core AVX2 VM, docs/benchmarks.md), and cuDNN's
    tensor-core convolutions under fp16 are laid out for it; the inputs are made NHWC where they are batched
    (engines/yolo_batch.py), the outputs are the same up to float rounding."""
    if random_init:
        from ultralytics import YOLO

        net = YOLO(f"{model}.yaml", task="detect").model
    else:
        if weights is None:
            raise EngineError(f"no weights given for detector {model}: pass the path from resolve_weights()")
        net = load_checkpoint_model(Path(weights))
    if not isinstance(net, torch.nn.Module):
        raise EngineError(f"{weights} is not a PyTorch YOLO model")
    net = net.float().to(device).eval()
    fuse = getattr(net, "fuse", None)
    if callable(fuse):
        net = fuse(verbose=False)
    net = net.to(memory_format=torch.channels_last)
    return net.half() if half else net
