"""Processing device, memory budgets, and out-of-memory handling."""
from __future__ import annotations

import logging

import psutil
import torch

log = logging.getLogger(__name__)


from ..errors import ResourceError  # noqa: E402,F401 - defined with its exit code in vr180matte.errors


def resolve_device(name: str) -> torch.device:
    """``cuda``/``cuda:N``/``cpu``; CUDA without a GPU falls back to CPU with a warning (tests and laptops)."""
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            log.warning("hardware.device=%s but no CUDA GPU is available: running on the CPU (slow)", name)
            return torch.device("cpu")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ResourceError(
                f"hardware.device={name} but only {torch.cuda.device_count()} GPU(s) exist: use cuda:0..."
            )
        return dev
    return torch.device("cpu")


# ``hardware.max_vram_gb: auto``: the share of the card's memory a run plans for (the rest is left to the CUDA
# context, the allocator's fragmentation and other processes), and the value reported without a GPU, where no
# VRAM budget is used (vram_budget_gb is None on the CPU; only the SAM2 state estimate reads it).
AUTO_VRAM_SHARE = 0.9
CPU_FALLBACK_VRAM_GB = 10.0


def resolve_max_vram_gb(value: float | str, device: torch.device) -> float:
    """``hardware.max_vram_gb`` as GB: a number as given, ``auto`` from the card (see AUTO_VRAM_SHARE)."""
    if value != "auto":
        return float(value)
    if device.type != "cuda":
        return CPU_FALLBACK_VRAM_GB
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    return round(total * AUTO_VRAM_SHARE, 1)


def vram_budget_gb(device: torch.device, max_vram_gb: float | str) -> float | None:
    """Usable VRAM: the smaller of the configured cap (``auto``: from the card) and what the card has free now."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return min(resolve_max_vram_gb(max_vram_gb, device), free / 2**30)


def peak_vram_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def is_oom(exc: BaseException) -> bool:
    """True for CUDA (and CPU allocator) out-of-memory errors, however torch spells them."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "cuda error: out of memory" in text)


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# Per-frame working-set estimates used to size chunks automatically. They are deliberately conservative:
# SAM2 state is bounded by the memory window, so the chunk length mostly bounds the overlap/hand-off cost
# and the decoded read-ahead, not the model state.
_MB_PER_MPIX_FRAME = 48.0  # float tensors of one processed eye (frame, features, logits, refine) per megapixel


def auto_chunk_size(
    eye_w: int, eye_h: int, scale: float, device: torch.device, max_vram_gb: float | str, max_memory_gb: float
) -> int:
    """Chunk length from the memory available; bounded to [120, 1800] frames."""
    mpix = eye_w * eye_h * scale * scale / 1e6
    per_frame_mb = max(_MB_PER_MPIX_FRAME * mpix * 2, 1.0)
    budget_gb = vram_budget_gb(device, max_vram_gb)
    if budget_gb is None:
        budget_gb = min(max_memory_gb, psutil.virtual_memory().available / 2**30) * 0.5
    # A chunk keeps ~1/8 of its frames' working set alive (window + overlap buffers); the rest streams.
    frames = int(budget_gb * 1024 / per_frame_mb * 8)
    chunk = max(120, min(1800, frames))
    log.info("chunk_size=auto -> %d frames (budget %.1f GB, %.1f MB/frame)", chunk, budget_gb, per_frame_mb)
    return chunk
