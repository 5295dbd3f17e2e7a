"""Streaming SAM2.1 video segmentation for one view, with memory that is flat in video length.

Why not the stock ``SAM2VideoPredictor``: ``init_state`` loads the whole video as float32 tensors (a JPEG
folder or decord), and its inference state keeps every frame's outputs (memory features, masks, pointers) for
every object forever, so RAM/VRAM grow with video length; it also runs each object as its own batch.

This module drives ``SAM2Base.track_step`` (the model's own per-frame step, unchanged) with a small state of
its own:

* frames arrive one at a time through :meth:`StreamingSam2Segmenter.segment`; each is resized to
  ``model.image_size`` and normalised on the device, and the image encoder runs once per frame for all tracks;
* every track is an object with its own memory bank: up to ``max_conditioning_frames`` prompted
  (conditioning) frames -- the first one is kept, the oldest others are evicted -- and the last
  ``memory_window`` non-conditioning frames' memory features. Object pointers (256 floats each) are kept for
  the model's pointer window (``max_obj_ptrs_in_encoder``, 16 frames); nothing else survives a frame:
  backbone features, images and the masks already returned are dropped;
* tracks whose memory banks hold the same frames are run as one batch (usually all of them), across views
  too: :func:`segment_batch` encodes both eyes' frames in one forward and runs both eyes' objects together;
* on CUDA the model runs under bf16 (or fp16) autocast when ``fp16``; on CPU in fp32. ``offload_to_cpu`` keeps
  the memory features on the host (copied there once per step, blocking, and to the device when attended to,
  as in the stock predictor); the memory banks themselves live in engines/sam2_memory.py;
* state is committed only after a frame succeeds, so an exception (e.g. CUDA out of memory) leaves the
  segmenter exactly as it was before the call; :meth:`reset` always leaves it empty.

Differences from the stock predictor, on purpose: no hole filling (needs SAM2's CUDA extension; the stock
predictor skips it too when the extension is missing), no reverse tracking, prompts are boxes or masks.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .sam2_memory import MemoryBank, StepOutput, Track, merged_output_dict

if TYPE_CHECKING:  # pragma: no cover
    from sam2.modeling.sam2_base import SAM2Base

log = logging.getLogger(__name__)

_IMG_MEAN = (0.485, 0.456, 0.406)
_IMG_STD = (0.229, 0.224, 0.225)
_UNBOUNDED_FRAMES = 1 << 30  # "video length" handed to SAM2 when streaming (only caps the pointer window)


@dataclass
class _Prompt:
    box: np.ndarray | None
    mask: torch.Tensor | None
    box_is_mask: bool = False  # the mask is known not to be empty (Segmenter.add_prompt)


def _autocast(device: torch.device, fp16: bool):
    """bf16 (or fp16 on GPUs without bf16) autocast on CUDA; plain fp32 elsewhere."""
    if fp16 and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


class StreamingSam2Segmenter:
    """Segmenter protocol implementation over a SAM2/SAM2.1 model (``SAM2Base`` or ``SAM2VideoPredictor``)."""

    name = "sam2-stream"

    def __init__(
        self,
        model: "SAM2Base",
        device: torch.device | str,
        *,
        memory_window: int = 7,
        max_conditioning_frames: int = 4,
        fp16: bool = True,
        offload_to_cpu: bool = True,
        expected_frames: int | None = None,
    ):
        """``expected_frames``: length of the stream when known (only used like the stock predictor's video
        length, to size the object-pointer window); None streams without a bound."""
        if memory_window < 1 or max_conditioning_frames < 1:
            raise ValueError("memory_window and max_conditioning_frames must be >= 1")
        self.model = model
        self.device = torch.device(device)
        self.memory_window = int(memory_window)
        self.max_conditioning_frames = int(max_conditioning_frames)
        self.fp16 = bool(fp16)
        self.storage_device = torch.device("cpu") if offload_to_cpu else self.device
        self.num_frames = int(expected_frames) if expected_frames else _UNBOUNDED_FRAMES
        self.image_size = int(model.image_size)
        self._ptr_window = int(getattr(model, "max_obj_ptrs_in_encoder", 16)) if model.use_obj_ptrs_in_encoder else 0
        self._mean = torch.tensor(_IMG_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(_IMG_STD, device=self.device).view(1, 3, 1, 1)
        self._pos_enc: list[torch.Tensor] | None = None  # maskmem_pos_enc is the same for every frame/object
        self.reset()

    # ------------------------------------------------------------------ protocol
    def reset(self) -> None:
        """Drop every track, pending prompt and cached tensor."""
        # every track's bounded memory (engines/sam2_memory.py)
        self.bank = MemoryBank(memory_window=self.memory_window, max_conditioning_frames=self.max_conditioning_frames,
                               ptr_window=self._ptr_window, maskmem_reach=self.model.num_maskmem - 1)
        self._pending: dict[int, _Prompt] = {}
        self._origin: int | None = None
        self._last_frame: int | None = None
        self._prefetched: tuple | None = None  # (frame_idx, batch backbone, row) from prefetch_batch

    def add_prompt(self, track_id: int, box: np.ndarray | None = None, mask: torch.Tensor | None = None, *,
                   box_is_mask: bool = False) -> None:
        """Prompt ``track_id`` on the next frame (new track, or a conditioning frame for an existing one).

        A non-empty ``mask`` wins over ``box`` (it carries more information: chunk hand-off); an empty mask
        falls back to ``box`` when one is given. With ``box_is_mask`` (the mask is known not to be empty) nobody
        asks whether it is: see :meth:`_mask_input`.
        """
        if box is None and mask is None:
            raise ValueError("add_prompt needs a box or a mask")
        if box is not None:
            box = np.asarray(box, dtype=np.float32).reshape(4)
        self._pending[int(track_id)] = _Prompt(box=box, mask=mask, box_is_mask=bool(box_is_mask and mask is not None))

    def remove_track(self, track_id: int) -> None:
        """Forget ``track_id``: its memory bank is released at once."""
        self.bank.tracks.pop(int(track_id), None)
        self._pending.pop(int(track_id), None)

    @property
    def track_ids(self) -> list[int]:
        """Live tracks (prompted at least once and not removed), including prompts not yet applied."""
        return sorted(set(self._tracks) | set(self._pending))

    def memory_sizes(self) -> dict[int, dict[str, int]]:
        """Entries held per track: ``cond`` (prompted frames), ``mem`` (memory frames), ``ptr`` (pointers)."""
        return self.bank.sizes()

    def state_bytes(self) -> int:
        """Bytes held by all memory banks (what must stay flat with video length)."""
        return self.bank.nbytes()

    @property
    def _tracks(self) -> dict[int, Track]:
        return self.bank.tracks

    # ------------------------------------------------------------------ per frame
    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, S, S) normalised float on the device (SAM2's own input format)."""
        if image.dim() != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {tuple(image.shape)}")
        x = image.to(self.device, non_blocking=True).permute(2, 0, 1)[None].float().div_(255.0)
        S = self.image_size
        if x.shape[-2:] != (S, S):
            x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        return (x - self._mean) / self._std

    def segment(self, frame_idx: int, image: torch.Tensor) -> dict[int, torch.Tensor]:
        """Masks of every live track on this frame: ``{track_id: (H, W) float32 probability}`` on the device."""
        return segment_batch([self], frame_idx, [image])[0]

    # ------------------------------------------------------------------ internals
    def _mask_input(self, mask: torch.Tensor, nonempty: bool = False) -> torch.Tensor:
        """A processing-resolution probability mask -> binary (1, 1, S, S) at the model size (may be empty: the
        caller asks all prompts of a frame whether they are, in one read).

        ``nonempty``: the mask has pixels > 0.5 at processing resolution (its box is known). A thin or tiny person
        can still fall under 0.5 everywhere once resized to the model size; such a mask keeps its strongest
        model-size pixels, so it stays a (small) mask prompt and needs no read. For any other mask those pixels
        are >= 0.5 already, so the result is the plain threshold, bit for bit."""
        m = mask.to(self.device).float()
        if m.dim() != 2:
            raise ValueError(f"mask prompts are (H, W), got shape {tuple(m.shape)}")
        S = self.image_size
        m = F.interpolate(m[None, None], size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        if nonempty:
            return ((m >= 0.5) | ((m == m.amax()) & (m > 0))).float()
        return (m >= 0.5).float()


@dataclass
class _View:
    """One view's part of a batched frame: its segmenter, relative frame index, row in the encoder batch, size."""

    seg: StreamingSam2Segmenter
    rel: int
    row: int
    H: int
    W: int


def _backbone_rows(bb: dict, rows: list[int]) -> dict:
    """The encoder output for a batch of objects whose frames are rows ``rows`` of the encoder batch: one row is
    expanded (a view, no copy, as a single view always was); rows of several views are gathered."""
    if len(set(rows)) == 1:
        r = rows[0]
        return {k: [t[r : r + 1].expand(len(rows), *t.shape[1:]) for t in bb[k]] for k in ("backbone_fpn", "vision_pos_enc")}
    idx = torch.as_tensor(rows, device=bb["backbone_fpn"][0].device)
    return {k: [t.index_select(0, idx) for t in bb[k]] for k in ("backbone_fpn", "vision_pos_enc")}


def _track_step(model, rel: int, num_frames: int, backbone: dict, is_init: bool, output_dict: dict,
                point_inputs: dict | None = None, mask_inputs: torch.Tensor | None = None) -> dict:
    _, feats, pos, sizes = model._prepare_backbone_features(backbone)
    return model.track_step(
        frame_idx=rel, is_init_cond_frame=is_init, current_vision_feats=feats, current_vision_pos_embeds=pos,
        feat_sizes=sizes, point_inputs=point_inputs, mask_inputs=mask_inputs, output_dict=output_dict,
        num_frames=num_frames, track_in_reverse=False, run_mem_encoder=True,
    )


def _scatter(out: dict, owners: list[tuple[int, int]], views: list[_View], cond: bool, results: list[dict]) -> None:
    """Hand each object's row of a batched ``track_step`` output to its own view (``owners[i]`` = (view, tid)).

    The memory part of the output is stored once (one :class:`StepOutput` per storage device, usually one) and
    every object's entry is a row view of it, so the next step can hand SAM2 the same batch without a copy."""
    steps: dict[torch.device, StepOutput] = {}
    for i, (k, tid) in enumerate(owners):
        seg = views[k].seg
        if seg._pos_enc is None and out.get("maskmem_pos_enc") is not None:
            seg._pos_enc = [x[0:1].clone() for x in out["maskmem_pos_enc"]]  # the same for every frame/object
        step = steps.get(seg.storage_device)
        if step is None:
            step = steps[seg.storage_device] = StepOutput(out, seg.storage_device)
        entry = step.entry(i)
        entry["cond"], entry["pred_masks"] = cond, out["pred_masks"][i : i + 1]
        results[k][tid] = entry


def _run_views(views: list[_View], backbone: dict) -> list[dict[int, dict]]:
    """Prompted and tracked objects of every view through SAM2's ``track_step``, batched across views.

    Objects of both eyes whose steps look alike (same relative frame, same memory layout) run as one batch:
    memory attention and the mask decoder see a batch of all of them, each object with its own view's image
    features and its own memory bank. Per object this is the same computation as running each view alone."""
    model = views[0].seg.model
    results: list[dict[int, dict]] = [{} for _ in views]
    empty = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    # 1) prompted tracks: an initial conditioning frame each (the prompt alone decides the mask, as in SAM2)
    boxes: dict[tuple, list] = {}
    masks: dict[tuple, list] = {}
    pending = [(k, tid, p, v.seg._mask_input(p.mask, p.box_is_mask) if p.mask is not None else None)
               for k, v in enumerate(views) for tid, p in v.seg._pending.items()]
    unknown = [m for _, _, p, m in pending if m is not None and not p.box_is_mask]
    # An empty mask prompt falls back to its box: whether each is empty, for every prompt of the frame, in one read
    # (none for masks whose box the caller knows: they are not empty).
    nonempty = iter(torch.stack([m.flatten().any() for m in unknown]).tolist() if unknown else [])
    for k, tid, p, m in pending:
        v = views[k]
        seg = v.seg
        key = (v.rel, seg.num_frames)
        if m is not None and not p.box_is_mask and not next(nonempty):
            m = None
        if m is not None or p.box is None:
            S = seg.image_size
            masks.setdefault(key, []).append((k, tid, m if m is not None else torch.zeros(1, 1, S, S, device=seg.device)))
        else:
            scale = np.array([v.W, v.H, v.W, v.H], dtype=np.float32)
            boxes.setdefault(key, []).append((k, tid, p.box / scale * seg.image_size))
    dev = views[0].seg.device
    for (rel, n), objs in boxes.items():
        b = torch.as_tensor(np.stack([o[2] for o in objs]), device=dev).view(-1, 2, 2)
        labels = torch.tensor([[2, 3]], dtype=torch.int32, device=dev).expand(len(objs), 2).contiguous()
        bb = _backbone_rows(backbone, [views[o[0]].row for o in objs])
        out = _track_step(model, rel, n, bb, True, empty, point_inputs={"point_coords": b, "point_labels": labels})
        _scatter(out, [(o[0], o[1]) for o in objs], views, True, results)
    for (rel, n), objs in masks.items():
        bb = _backbone_rows(backbone, [views[o[0]].row for o in objs])
        out = _track_step(model, rel, n, bb, True, empty, mask_inputs=torch.cat([o[2] for o in objs], 0))
        _scatter(out, [(o[0], o[1]) for o in objs], views, True, results)
    # 2) tracked objects, batched by identical memory layout (across views)
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for k, v in enumerate(views):
        seg = v.seg
        for tid, tr in seg._tracks.items():
            if tid in seg._pending:
                continue
            groups.setdefault((v.rel, seg.num_frames, seg.bank.signature(tr, v.rel)), []).append((k, tid))
    for (rel, n, sig), objs in groups.items():
        lead = next((views[k].seg for k, _ in objs if views[k].seg._pos_enc is not None), views[objs[0][0]].seg)
        output_dict = merged_output_dict([views[k].seg._tracks[t] for k, t in objs], sig, lead._pos_enc)
        bb = _backbone_rows(backbone, [views[k].row for k, _ in objs])
        out = _track_step(model, rel, n, bb, False, output_dict)
        _scatter(out, objs, views, False, results)
    return results


def prefetch_batch(segmenters: list["StreamingSam2Segmenter"], frame_idx: int, images: list[torch.Tensor]) -> None:
    """Encode several views' frames (both eyes) in one image-encoder forward, ahead of their ``segment`` calls.

    Why: the stereo stage steps the eyes one after the other (master-slave seeds the right eye with the left
    eye's mask of the same frame), so the views cannot share one :func:`segment_batch`; the image encoder, most of
    SAM2's cost per frame, does not depend on prompts and can. Each segmenter keeps its row of the batch for
    ``frame_idx`` only; ``segment`` uses it instead of encoding again. Views sharing a model are batched.
    """
    groups: dict[int, list[int]] = {}
    for i, seg in enumerate(segmenters):
        groups.setdefault(id(seg.model), []).append(i)
    for members in groups.values():
        lead = segmenters[members[0]]
        with torch.inference_mode(), _autocast(lead.device, lead.fp16):
            x = torch.cat([segmenters[i].preprocess(images[i]) for i in members], 0)
            backbone = lead.model.forward_image(x)
        for j, i in enumerate(members):
            segmenters[i]._prefetched = (int(frame_idx), backbone, j)


def segment_batch(
    segmenters: list[StreamingSam2Segmenter], frame_idx: int, images: list[torch.Tensor]
) -> list[dict[int, torch.Tensor]]:
    """One frame of several views (both eyes) with one image-encoder forward for all of them.

    ``segmenters[i]`` gets ``images[i]``; segmenters that share a model (the usual case: one SAM2 for both eyes)
    have their frames encoded as one batch (the Hiera encoder is most of SAM2's cost per frame, and a batch of 2
    keeps a GPU busier than two batches of 1); then the objects of all those views go through memory attention
    and the mask decoder together (:func:`_run_views`), each with its own view's features and memory bank. Each
    view keeps its own tracks and state. Results equal :meth:`StreamingSam2Segmenter.segment` per view (within
    float tolerance of batched kernels). State is committed only after every view succeeded.
    """
    if len(segmenters) != len(images):
        raise ValueError(f"segment_batch needs one image per segmenter, got {len(images)} for {len(segmenters)}")
    frame_idx = int(frame_idx)
    for seg in segmenters:
        if seg._last_frame is not None and frame_idx <= seg._last_frame:
            raise ValueError(f"frames must come in increasing order: got {frame_idx} after {seg._last_frame}")
    out: list[dict[int, torch.Tensor]] = [{} for _ in segmenters]
    active = [i for i, seg in enumerate(segmenters) if seg._tracks or seg._pending]  # idle views: no encoder run
    groups: dict[int, list[int]] = {}
    for i in active:
        groups.setdefault(id(segmenters[i].model), []).append(i)
    staged: list[tuple[int, int, list[int], dict]] = []
    for members in groups.values():
        lead = segmenters[members[0]]
        pre = getattr(lead, "_prefetched", None)
        with torch.inference_mode(), _autocast(lead.device, lead.fp16):
            if len(members) == 1 and pre is not None and pre[0] == frame_idx:
                backbone, rows = pre[1], [pre[2]]  # encoded with the other eye by prefetch_batch
            else:
                x = torch.cat([segmenters[i].preprocess(images[i]) for i in members], 0)
                backbone, rows = lead.model.forward_image(x), list(range(len(members)))
            views = []
            for j, i in zip(rows, members):
                seg = segmenters[i]
                origin = frame_idx if seg._origin is None else seg._origin
                views.append(_View(seg, frame_idx - origin, j, int(images[i].shape[0]), int(images[i].shape[1])))
            per_view = _run_views(views, backbone)
            for v, i, results in zip(views, members, per_view):
                tids = list(results)
                if tids:
                    logits = torch.cat([results[t]["pred_masks"] for t in tids], 0).float()
                    probs = torch.sigmoid(F.interpolate(logits, size=(v.H, v.W), mode="bilinear", align_corners=False))
                    out[i] = {tid: probs[k, 0] for k, tid in enumerate(tids)}
                staged.append((i, frame_idx - v.rel, tids, results))
    # Commit: only now does any state change (an exception above leaves every view untouched).
    for seg in segmenters:
        seg._last_frame = frame_idx
        seg._prefetched = None
    for i, origin, tids, results in staged:
        seg = segmenters[i]
        seg._origin = origin
        rel = frame_idx - origin
        for tid in tids:
            seg.bank.commit(tid, rel, results[tid], results[tid]["cond"])
        seg._pending.clear()
    return out


StreamingSam2Segmenter.prefetch_batch = staticmethod(prefetch_batch)  # the stereo stage's hook (parallel_eyes)
