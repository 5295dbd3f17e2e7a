"""The device policy: every device-dependent choice of a run, made once, in one place.

Why one object: the per-frame code is the same torch ops on either device; what differs between a GPU and a
CPU is *how much* work goes into one op (whole eyes or tiles), where long-lived state lives (SAM2's memory on
the device or on the host), how many frames the detector batches, which decoder runs and how many encoder
contexts work side by side. Deciding these with ``if device.type == "cuda"`` branches spread through the stages
made the CPU era's choices stick on the GPU. A stage reads its choice from the policy instead; a test or a
benchmark can force the GPU policy on a CPU (``hardware.policy: gpu``) to exercise and count the GPU path
without a GPU.

The policy is chosen by :func:`choose_policy` from the resolved device, the machine's cores and the config; it
is frozen and travels in the run plan.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import torch

from ..compat import machine

POLICIES = ("auto", "gpu", "cpu")


@dataclass(frozen=True)
class DevicePolicy:
    """How the frame path runs on this machine (see the module docstring for why this is one object).

    ``kind``: ``"gpu"`` or ``"cpu"``, the shape of the work, not necessarily the device it runs on (a forced
    GPU policy on a CPU runs the GPU shapes on the CPU).
    ``device``: where tensors live.
    ``whole_frame``: refinement, temporal smoothing and compositing run as whole-eye, both-eye batched ops
    (GPU) instead of tile/block loops that skip untouched regions (CPU, where skipping work is what pays); the
    same trade for the ROI segmenter's overlap hand-out (run every frame, its numbers read with the tracker's,
    instead of a read that lets a frame nobody overlaps skip it: engines/roi.py).
    ``refine_tile``: full-resolution tile side of the tile path.
    ``sam2_state_on_device``: default for ``matting.memory_offload: auto`` (state kept on the device).
    ``detector_batch``: images per detector forward (tiles and crops of a detection frame together).
    ``host_resize``: the processing-size copy of each eye is resized by OpenCV on the host (CPU: its area
    resampling is ~4x faster than torch's antialiased bilinear) instead of by torch where the frame is (GPU: no
    download). The two resamplers differ at edges (up to tens of grey levels), which the segmenter follows: on
    the parkour and bedroom clips the two policies' mattes agree with IoU 0.966-0.985 per frame
    (tests/pipeline/test_frame_path.py).
    ``detector_warmup``: run the detector's fixed batch shape once when it loads (a GPU's kernel selection and
    allocator pay it then, not on the first detection frame; on a CPU it would only cost seconds).
    ``cores``: CPU cores available to the process.
    ``encoders``: encoder contexts working on consecutive intra-only frames (ProRes, PNG).
    ``codec_threads``: FFmpeg threads per decoder/encoder context (bounds FFmpeg's frame pools).
    ``torch_threads``: intra-op threads for torch on the CPU.
    ``reason``: one line saying why this policy was chosen (log and stats.json).
    ``stage_streams``: each stage thread runs on a CUDA stream of its own, with events at the hand-offs
    (runtime/streams.py; only ever on for a CUDA device).
    ``pool_threads``: torch's and OpenCV's thread pools are set to ``torch_threads`` for the run
    (:func:`thread_pools`): the GPU policy leaves the cores to FFmpeg and the stage threads; the CPU policy keeps
    the libraries' own sizing, which its measurements were made with.
    """

    kind: str
    device: torch.device
    whole_frame: bool
    refine_tile: int
    sam2_state_on_device: bool
    detector_batch: int
    cores: int
    encoders: int
    codec_threads: int
    torch_threads: int
    reason: str
    detector_warmup: bool = False
    host_resize: bool = False
    stage_streams: bool = False
    pool_threads: bool = False

    def as_dict(self) -> dict:
        d = asdict(self)
        d["device"] = str(self.device)
        return d


def choose_policy(device: torch.device, *, force: str = "auto", cores: int | None = None) -> DevicePolicy:
    """The policy for ``device`` on a machine with ``cores`` cores; ``force`` (``hardware.policy``) overrides
    the kind. The numbers come from measurements recorded in docs/benchmarks.md; the reasons say so."""
    if force not in POLICIES:
        raise ValueError(f"hardware.policy must be one of {', '.join(POLICIES)}, got {force!r}")
    n = max(1, int(cores if cores is not None else machine.available_cores()))
    gpu = device.type == "cuda"
    kind = ("gpu" if gpu else "cpu") if force == "auto" else force
    reason = f"{kind} policy: " + ("device is " + device.type if force == "auto" else f"forced (hardware.policy={force})")
    if kind == "gpu":
        # The models and the frame math run on the GPU: the cores are left to FFmpeg. Roughly a quarter go to
        # the decoder, one to the Python stage threads, the rest to parallel encoder contexts.
        encoders = max(1, min(8, (n - max(1, n // 4) - 1)))
        return DevicePolicy(
            kind="gpu", device=device, whole_frame=True, refine_tile=4096, sam2_state_on_device=True,
            detector_batch=32, cores=n, encoders=encoders, codec_threads=max(1, min(4, n // 4)),
            torch_threads=max(1, min(4, n // 4)), reason=reason, detector_warmup=gpu, stage_streams=gpu,
            pool_threads=True,
        )
    # CPU: the matting itself needs the cores; one encoder context with FFmpeg's own threads keeps the I/O
    # from oversubscribing them (on 2 cores, two contexts measured no faster than one).
    return DevicePolicy(
        kind="cpu", device=device, whole_frame=False, refine_tile=256, sam2_state_on_device=False,
        detector_batch=8, cores=n, encoders=1 if n <= 4 else max(1, n // 4), codec_threads=min(n, 16),
        torch_threads=n, reason=reason, host_resize=True,
    )


@contextmanager
def thread_pools(policy: DevicePolicy) -> Iterator[None]:
    """torch's intra-op and OpenCV's thread pools at ``policy.torch_threads`` for the ``with`` block, restored
    after (a library caller's settings are not changed for good); a no-op unless ``policy.pool_threads``."""
    if not policy.pool_threads:
        yield
        return
    import cv2

    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(policy.torch_threads)
    cv2.setNumThreads(policy.torch_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
