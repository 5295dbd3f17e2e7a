"""The streaming SAM2 segmenter's bounded memory: every track's memory bank of one view, and how a batch of
tracks is handed to SAM2's ``track_step`` (engines/sam2_stream.py drives the model; this module holds state).

Per track: up to ``max_conditioning_frames`` prompted (conditioning) frames -- the first one is kept, the oldest
others are evicted -- the last ``memory_window`` non-conditioning frames' memory features, and object pointers
for the model's pointer window. Each stored entry is a *row view* of the batched ``track_step`` output it came
from (:class:`StepOutput`), not a copy:

* Why views: in a steady scene the same objects run as one batch frame after frame, so each memory frame's
  entries of a batch are exactly the rows of one earlier step's output, in the same order. The merged input
  SAM2 needs (object axis first) is then that earlier output itself, and no ``torch.cat`` runs for it: the memory
  window works as a ring of step outputs that each fall out after ``memory_window`` frames. Only when the batch
  changed (a person joined or left, a re-prompt) are that frame's entries concatenated.
* The cost: a removed track's rows stay allocated until their frames leave the window (bounded by the window).

Storage: with offload the memory features of a step are copied to the host **once per step, blocking** (the copy
must have landed before anything on the host reads the buffer; a ``non_blocking`` copy followed by a host
``clone()`` could read a stale pinned buffer on CUDA). Without offload they stay on the device (no host read).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch


class StepOutput:
    """The memory part of one batched ``track_step`` output, kept once and shared by its objects' entries.

    ``maskmem_features``: (B, C, h, w) bf16 on the storage device; ``obj_ptr``: (B, 256) on the model device;
    ``rows``: objects in the batch (B)."""

    __slots__ = ("maskmem_features", "obj_ptr", "object_score_logits", "rows")

    def __init__(self, out: dict, storage: torch.device):
        feats = out.get("maskmem_features")
        if feats is not None:
            feats = feats.to(torch.bfloat16)
            if feats.device != storage:
                feats = feats.to(storage)  # blocking on purpose: see the module docstring
        self.maskmem_features = feats
        self.obj_ptr = out["obj_ptr"]
        self.object_score_logits = out["object_score_logits"]
        self.rows = int(out["obj_ptr"].shape[0])

    def entry(self, row: int) -> dict[str, Any]:
        """One object's entry: row views of the batch plus where they came from (for :func:`merged_output_dict`)."""
        f = self.maskmem_features
        return {"maskmem_features": None if f is None else f[row : row + 1], "obj_ptr": self.obj_ptr[row : row + 1],
                "object_score_logits": self.object_score_logits[row : row + 1], "src": self, "row": row}


@dataclass
class Track:
    """One object's bounded memory bank. Keys are frame indices relative to the segmenter's origin; values are
    :meth:`StepOutput.entry` dicts."""

    cond: "OrderedDict[int, dict[str, Any]]" = field(default_factory=OrderedDict)  # prompted frames
    mem: "OrderedDict[int, dict[str, Any]]" = field(default_factory=OrderedDict)  # last non-cond frames
    ptr: "OrderedDict[int, dict[str, Any]]" = field(default_factory=OrderedDict)  # recent object pointers


class MemoryBank:
    """Every track's memory of one view, with the window limits of the segmenter that owns it."""

    def __init__(self, *, memory_window: int, max_conditioning_frames: int, ptr_window: int, maskmem_reach: int):
        self.memory_window = int(memory_window)
        self.max_conditioning_frames = int(max_conditioning_frames)
        self.ptr_window = int(ptr_window)
        self.maskmem_reach = int(maskmem_reach)  # the model reads memory of frames rel-1 .. rel-reach
        self.tracks: dict[int, Track] = {}

    def signature(self, tr: Track, rel: int) -> tuple:
        """Which frames this track's model view holds; tracks with the same layout can share one batch."""
        mem = tuple(tr.mem)
        ptr_only = tuple(t for t in tr.ptr if t not in tr.mem and rel - t > self.maskmem_reach)
        return tuple(tr.cond), mem, ptr_only

    def commit(self, tid: int, rel: int, entry: dict, cond: bool) -> None:
        """Store this frame's memory for ``tid`` and evict what falls out of the bounded windows."""
        entry = {k: entry[k] for k in ("maskmem_features", "obj_ptr", "object_score_logits", "src", "row")}
        tr = self.tracks.get(tid)
        if tr is None:
            tr = self.tracks[tid] = Track()
        if cond:
            tr.cond[rel] = entry
            while len(tr.cond) > self.max_conditioning_frames:
                keys = list(tr.cond)
                del tr.cond[keys[1]]  # keep the first prompt (identity anchor), drop the oldest re-prompt
        else:
            tr.mem[rel] = entry
            while len(tr.mem) > self.memory_window:
                tr.mem.popitem(last=False)
            if self.ptr_window:
                tr.ptr[rel] = entry
        # pointers are only read for frames rel-1 .. rel-(window-1)
        while tr.ptr and next(iter(tr.ptr)) <= rel + 1 - self.ptr_window:
            tr.ptr.popitem(last=False)

    def sizes(self) -> dict[int, dict[str, int]]:
        return {tid: {"cond": len(t.cond), "mem": len(t.mem), "ptr": len(t.ptr)} for tid, t in self.tracks.items()}

    def nbytes(self) -> int:
        """Bytes of every storage the banks keep alive (shared step outputs counted once)."""
        seen: set[int] = set()
        total = 0
        for tr in self.tracks.values():
            for e in [*tr.cond.values(), *tr.mem.values(), *tr.ptr.values()]:
                for t in (e["maskmem_features"], e["obj_ptr"]):
                    if t is None:
                        continue
                    key = t.untyped_storage().data_ptr()
                    if key not in seen:
                        seen.add(key)
                        total += t.untyped_storage().nbytes()
        return total


def _stacked(entries: list[dict], key: str) -> torch.Tensor:
    """``entries``' tensors along the object axis: the step output itself when the entries are exactly its rows
    in order (the steady case, no copy), else one concatenation."""
    src = entries[0]["src"]
    if src.rows == len(entries) and all(e["src"] is src and e["row"] == i for i, e in enumerate(entries)):
        return getattr(src, key)
    return torch.cat([e[key] for e in entries], 0)


def merged_output_dict(tracks: list[Track], sig: tuple, pos_enc: list[torch.Tensor] | None) -> dict:
    """SAM2's ``output_dict`` for a batch of tracks with the same :meth:`MemoryBank.signature`."""
    cond_keys, mem_keys, ptr_keys = sig
    B = len(tracks)
    pos = [p.expand(B, -1, -1, -1) for p in pos_enc] if pos_enc is not None else None

    def merge(entries: list[dict]) -> dict:
        return {"maskmem_features": _stacked(entries, "maskmem_features"), "maskmem_pos_enc": pos,
                "obj_ptr": _stacked(entries, "obj_ptr")}

    cond = {t: merge([tr.cond[t] for tr in tracks]) for t in cond_keys}
    non_cond = {t: merge([tr.mem[t] for tr in tracks]) for t in mem_keys}
    for t in ptr_keys:
        non_cond[t] = {"obj_ptr": _stacked([tr.ptr[t] for tr in tracks], "obj_ptr")}
    return {"cond_frame_outputs": cond, "non_cond_frame_outputs": non_cond}
