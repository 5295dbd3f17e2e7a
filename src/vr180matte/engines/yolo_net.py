"""The YOLOv8 network of the person detector (engines/yolo.py): sized and warmed up once per detector.

The checkpoint is data (engines/yolo_weights.py; the detector loads it through its own module, where tests spy
on the loader); this is what the detector needs of the network besides its forward: the stride its inputs are
padded to, the input side rounded up to that stride, and on a GPU one forward of the full batch shape at load,
so the first detection frame does not pay for the kernels' set-up.
"""
from __future__ import annotations

import math

import torch

from vr180matte.engines.yolo_batch import PAD, nhwc


def input_size(net: torch.nn.Module, imgsz: int) -> tuple[int, int]:
    """The network's stride and its input side: ``imgsz`` rounded up to a stride multiple."""
    stride = int(max(int(net.stride.max()), 32)) if hasattr(net, "stride") else 32
    return stride, int(math.ceil(imgsz / stride) * stride)


def warm_up(net: torch.nn.Module, batch: int, imgsz: int, device: torch.device, half: bool) -> None:
    """One forward of a full batch of letterbox-grey inputs (the fixed shape of a full batch of tiles)."""
    with torch.inference_mode():
        dtype = torch.float16 if half else torch.float32
        net(nhwc(torch.full((batch, 3, imgsz, imgsz), PAD, device=device, dtype=dtype)))  # as NetBatch.run gives it
