"""One download for the device values several parts of a view's frame step need on the host.

Why: each ``.cpu()`` of a device value is a synchronisation with the device (and, with stages on one stream,
with every other stage's kernels). Parts of one frame step that only need their numbers later in the same step
(the ROI segmenter's lane boxes and overlap count, the tracker's mask statistics) post their device tensors here
with what to do with the values, and the one :meth:`FrameDownload.flush` of the step brings them all down in one
transfer and hands each part its values, in the order posted.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["FrameDownload"]


class FrameDownload:
    """Device tensors posted during a frame step, brought down together by :meth:`flush` (one host read)."""

    def __init__(self) -> None:
        self._posted: list[tuple[torch.Tensor, Callable[[list[float]], None]]] = []

    def post(self, values: torch.Tensor, then: Callable[[list[float]], None]) -> None:
        """Bring ``values`` (any shape; float32 on the host, so integers are exact below 2**24) down with the
        next :meth:`flush` and call ``then`` with them, flattened."""
        self._posted.append((values.detach().float().flatten(), then))

    def __len__(self) -> int:
        return len(self._posted)

    def flush(self) -> None:
        """One transfer for everything posted; each part's ``then`` runs in the order posted."""
        if not self._posted:
            return
        posted, self._posted = self._posted, []
        device = posted[0][0].device
        host = torch.cat([v.to(device) for v, _ in posted]).cpu().tolist()  # the one read
        i = 0
        for v, then in posted:
            then(host[i: i + v.numel()])
            i += v.numel()
