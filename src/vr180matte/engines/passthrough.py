"""Pass-through engine: alpha = 1 everywhere. Measures the I/O path's own cost (benchmarks/io_overhead.py)."""
from __future__ import annotations

import torch

from ..config import Config


class PassthroughEngine:
    """No detector, no segmenter: the pipeline writes the frames with an opaque alpha."""

    name = "passthrough"
    opaque = True  # the pipeline uses its OpaqueMatter: frames written as decoded, alpha 1

    def __init__(self, cfg: Config, device: torch.device):
        self.device = device

    def make_detector(self) -> None:
        return None

    def make_segmenter(self, view: str) -> None:  # the pipeline never segments with this engine
        return None
