"""The streaming SAM2 memory banks (engines/sam2_memory.py) on a random-init hiera-tiny at a tiny image size:
offload on and off give the same masks, the steady batch is handed to SAM2 without concatenation, a step is
stored once and shared by its objects."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vr180matte.engines import sam2_memory
from vr180matte.engines.sam2_stream import StreamingSam2Segmenter

torch.set_num_threads(2)
H, W = 48, 64
BOXES = {1: [4, 6, 30, 40], 2: [28, 10, 60, 44], 3: [10, 2, 50, 30]}


def _model(device):
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    return build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", None, device=str(device),
                                      hydra_overrides_extra=["++model.image_size=64"])


def _frames(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (H, W, 3), dtype=torch.uint8, generator=g) for _ in range(n)]


def _run(model, device, offload, frames, *, window=3):
    seg = StreamingSam2Segmenter(model, device, memory_window=window, max_conditioning_frames=2, fp16=False,
                                 offload_to_cpu=offload)
    for tid, b in BOXES.items():
        seg.add_prompt(tid, box=np.array(b, np.float32))
    out = []
    for i, f in enumerate(frames):
        if i == 4:
            seg.add_prompt(2, box=np.array([26, 8, 62, 46], np.float32))  # a re-prompt: the batch changes
        out.append({t: m.float().cpu() for t, m in seg.segment(i, f).items()})
    return seg, out


def test_offload_on_and_off_give_the_same_masks(device):
    """Memory on the host (blocking copy of each step) against memory on the device: same masks. On the CPU both
    are host memory, so the comparison only bites on a GPU (the `device` fixture adds cuda there)."""
    model = _model(device)
    frames = _frames(8, seed=1)
    on, masks_on = _run(model, device, True, frames)
    off, masks_off = _run(model, device, False, frames)
    for a, b in zip(masks_on, masks_off):
        assert set(a) == set(b) == set(BOXES)
        for t in a:
            assert torch.allclose(a[t], b[t], atol=1e-5), (t, float((a[t] - b[t]).abs().max()))
    feats_on = next(iter(on._tracks[1].mem.values()))["maskmem_features"]
    feats_off = next(iter(off._tracks[1].mem.values()))["maskmem_features"]
    assert feats_on.device.type == "cpu" and feats_off.device.type == torch.device(device).type
    assert feats_on.dtype == feats_off.dtype == torch.bfloat16


def test_steady_batch_reaches_sam2_without_concatenation(monkeypatch):
    """Three tracks stepped together: once the windows hold only steady steps, every memory frame handed to SAM2
    is an earlier step's output itself (no torch.cat), and the masks equal the concatenating path's."""
    model = _model("cpu")
    frames = _frames(7, seed=2)
    merged: list[dict] = []
    real = sam2_memory.merged_output_dict
    monkeypatch.setattr("vr180matte.engines.sam2_stream.merged_output_dict",
                        lambda *a: merged.append(real(*a)) or merged[-1])
    seg, fast = _run(model, "cpu", False, frames[:4])
    last = merged[-1]["non_cond_frame_outputs"]
    assert len(last) >= 2
    shared = {id(s) for tr in seg._tracks.values() for e in tr.mem.values() for s in [e["src"]]}
    for entry in last.values():
        assert entry["maskmem_features"].shape[0] == len(BOXES)
        # the batch tensor of one StepOutput, not a fresh concatenation
        assert any(entry["maskmem_features"] is e["src"].maskmem_features
                   for tr in seg._tracks.values() for e in tr.mem.values())
    assert len(shared) == len(seg._tracks[1].mem)  # one shared step output per memory frame, not one per track

    # the same frames with every stack concatenated (the previous behaviour) give the same masks
    monkeypatch.setattr(sam2_memory, "_stacked", lambda entries, key: torch.cat([e[key] for e in entries], 0))
    _, slow = _run(model, "cpu", False, frames[:4])
    for a, b in zip(fast, slow):
        for t in a:
            assert torch.equal(a[t], b[t])


def test_step_output_entries_are_row_views_of_one_stored_batch():
    """A step's memory is stored once (bf16) and each object's entry is a view of its row, not a copy."""
    feats = torch.randn(3, 4, 2, 2)
    out = {"maskmem_features": feats, "obj_ptr": torch.randn(3, 8), "object_score_logits": torch.randn(3, 1)}
    step = sam2_memory.StepOutput(out, torch.device("cpu"))
    assert step.rows == 3 and step.maskmem_features.dtype == torch.bfloat16
    e = step.entry(2)
    assert torch.equal(e["maskmem_features"], feats[2:3].to(torch.bfloat16)) and e["row"] == 2 and e["src"] is step
    assert e["maskmem_features"].untyped_storage().data_ptr() == step.maskmem_features.untyped_storage().data_ptr()
    assert e["obj_ptr"].untyped_storage().data_ptr() == out["obj_ptr"].untyped_storage().data_ptr()


def test_bank_windows_and_bytes_count_shared_storage_once():
    bank = sam2_memory.MemoryBank(memory_window=2, max_conditioning_frames=2, ptr_window=4, maskmem_reach=2)
    for rel in range(6):
        out = {"maskmem_features": torch.zeros(2, 4, 2, 2), "obj_ptr": torch.zeros(2, 8),
               "object_score_logits": torch.zeros(2, 1)}
        step = sam2_memory.StepOutput(out, torch.device("cpu"))
        for row, tid in enumerate((7, 8)):
            bank.commit(tid, rel, step.entry(row), cond=rel == 0)
    assert bank.sizes() == {7: {"cond": 1, "mem": 2, "ptr": 3}, 8: {"cond": 1, "mem": 2, "ptr": 3}}
    # four steps alive (frame 0 cond, 3, 4, 5 as pointers/memory), each stored once for both tracks
    per_step = 2 * 4 * 2 * 2 * 2 + 2 * 8 * 4
    assert bank.nbytes() == 4 * per_step
    sig = bank.signature(bank.tracks[7], 6)
    assert sig == ((0,), (4, 5), (3,))
    merged = sam2_memory.merged_output_dict([bank.tracks[7], bank.tracks[8]], sig, None)
    assert merged["non_cond_frame_outputs"][5]["maskmem_features"] is bank.tracks[7].mem[5]["src"].maskmem_features
    # a batch in another order is concatenated (rows must match their objects)
    swapped = sam2_memory.merged_output_dict([bank.tracks[8], bank.tracks[7]], sig, None)
    assert swapped["non_cond_frame_outputs"][5]["maskmem_features"] is not merged["non_cond_frame_outputs"][5][
        "maskmem_features"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the offload copy race only exists there")
def test_offloaded_features_equal_device_features_on_cuda():
    model = _model("cuda")
    frames = _frames(5, seed=3)
    on, _ = _run(model, "cuda", True, frames)
    off, _ = _run(model, "cuda", False, frames)
    for t in BOXES:
        for k, e in off._tracks[t].mem.items():
            assert torch.equal(on._tracks[t].mem[k]["maskmem_features"], e["maskmem_features"].cpu())
