"""det-sam2 engine wiring: weights resolution, shared SAM2 model, detector -> prompt -> streaming masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vr180matte.engines.roi import RoiSegmenter

from vr180matte.config import load_config
from vr180matte.engines.base import EngineError
from vr180matte.engines.det_sam2 import DetSam2Engine, det_sam2_weights_present
from vr180matte.engines.sam2_stream import StreamingSam2Segmenter
from vr180matte.engines.yolo import YoloDetector

torch.set_num_threads(2)
SMALL = ["++model.image_size=64"]


def _cfg(tmp_path, *extra):
    return load_config(None, [f"models.dir={tmp_path}", "hardware.device=cpu", *extra])


def test_missing_weights_one_line_error(tmp_path):
    cfg = _cfg(tmp_path)
    assert not det_sam2_weights_present(cfg)
    with pytest.raises(EngineError) as err:
        DetSam2Engine(cfg, torch.device("cpu"))
    msg = str(err.value)
    # No yolov8n.pt either, but the bundled detector stands in for it: the one thing missing is SAM2.
    assert "sam2.1_hiera_tiny.pt" in msg and str(tmp_path) in msg and "\n" not in msg


def test_random_init_end_to_end_shared_model(tmp_path):
    cfg = _cfg(tmp_path, "detection.confidence_threshold=0.0", "matting.memory_window=3",
               "matting.max_conditioning_frames=2")
    eng = DetSam2Engine(cfg, torch.device("cpu"), random_init=True, sam2_overrides=SMALL)
    det = eng.make_detector()
    roi_l, roi_r = eng.make_segmenter("left"), eng.make_segmenter("right")
    assert isinstance(roi_l, RoiSegmenter)  # small people get their own crops (engines/roi.py)
    left, right = roi_l.full, roi_r.full
    assert isinstance(det, YoloDetector) and isinstance(left, StreamingSam2Segmenter)
    assert left.model is right.model is eng.sam2 and left is not right  # one model, two states
    assert (left.memory_window, left.max_conditioning_frames, left.fp16) == (3, 2, True)
    img = torch.randint(0, 256, (48, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dets = det.detect(img)
    assert dets  # threshold 0: a random network still proposes boxes
    left.add_prompt(1, box=dets[0].box)
    out = left.segment(0, img)
    assert set(out) == {1} and out[1].shape == (48, 64)
    assert right.segment(0, img) == {}  # the other eye's state is separate


def test_loads_real_checkpoint_files(tmp_path):
    """Random weights saved as real files go through resolve_weights and the official loaders."""
    from ultralytics import YOLO
    from sam2.build_sam import build_sam2_video_predictor

    YOLO("yolov8n.yaml", task="detect").save(str(tmp_path / "yolov8n.pt"))
    torch.manual_seed(0)
    m = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
                                   hydra_overrides_extra=SMALL)
    torch.save({"model": {k: v.half() for k, v in m.state_dict().items()}}, tmp_path / "sam2.1_hiera_tiny.pt")
    cfg = _cfg(tmp_path)
    assert det_sam2_weights_present(cfg)
    eng = DetSam2Engine(cfg, torch.device("cpu"), sam2_overrides=SMALL)
    w = next(iter(m.sam_mask_decoder.parameters()))
    w2 = next(iter(eng.sam2.sam_mask_decoder.parameters()))
    assert torch.allclose(w, w2, atol=1e-2) and not torch.equal(w2, torch.zeros_like(w2))
    assert isinstance(eng.make_detector(), YoloDetector)
    # the wrong model size for the file is a one-line error, not a traceback
    bad = _cfg(tmp_path, "matting.sam2_model=sam2.1_hiera_small")
    (tmp_path / "sam2.1_hiera_small.pt").write_bytes((tmp_path / "sam2.1_hiera_tiny.pt").read_bytes())
    with pytest.raises(EngineError, match="cannot load SAM2 weights"):
        DetSam2Engine(bad, torch.device("cpu"), sam2_overrides=SMALL)


def test_memory_offload_auto_follows_policy_and_vram(tmp_path, monkeypatch):
    """matting.memory_offload: auto keeps SAM2's state on a GPU when the GPU policy says so and the state's bound
    fits a quarter of hardware.max_vram_gb; true/false are taken as given; a CPU keeps it in host memory."""
    from vr180matte.engines.det_sam2 import sam2_state_bytes_bound, state_offload
    from vr180matte.runtime.policy import choose_policy

    cuda = torch.device("cuda")
    gpu, cpu_policy = choose_policy(cuda, cores=16), choose_policy(cuda, force="cpu", cores=16)
    cfg = _cfg(tmp_path, "hardware.max_vram_gb=9.5")
    assert cfg.matting.memory_offload == "auto"
    bound = sam2_state_bytes_bound(cfg, 1024, 64)
    assert bound == 2 * 2 * 16 * (7 + 4) * (64 * 64 * 64 * 2 + 1024)  # both eyes, 16 persons, 11 entries
    off, why = state_offload(cfg, cuda, gpu, 1024, 64)
    assert off is False and "fits" in why
    assert state_offload(cfg, cuda, cpu_policy, 1024, 64)[0] is True  # the CPU policy keeps it on the host
    tiny = _cfg(tmp_path, "hardware.max_vram_gb=0.5", "detection.max_persons=64")
    assert 4 * bound > 0.5 * 2**30 * 0.25 and state_offload(tiny, cuda, gpu, 1024, 64)[0] is True
    assert state_offload(_cfg(tmp_path, "matting.memory_offload=true"), cuda, gpu, 1024, 64) == (
        True, "matting.memory_offload=true")
    assert state_offload(_cfg(tmp_path, "matting.memory_offload=false"), cuda, cpu_policy, 1024, 64)[0] is False
    cpu = torch.device("cpu")
    assert state_offload(cfg, cpu, choose_policy(cpu, force="gpu"), 1024, 64)[0] is False


def test_engine_applies_offload_and_compile_choice(tmp_path, monkeypatch):
    """The engine hands its offload decision to every segmenter; matting.compile asks SAM2 for its vos_optimized
    (torch.compile) predictor."""
    import sam2.build_sam as build_sam

    seen = {}
    real = build_sam.build_sam2_video_predictor

    def spy(*a, **kw):
        seen["vos_optimized"] = kw.get("vos_optimized")
        kw["vos_optimized"] = False  # do not compile on the CPU test machine
        return real(*a, **kw)

    monkeypatch.setattr(build_sam, "build_sam2_video_predictor", spy)
    eng = DetSam2Engine(_cfg(tmp_path, "matting.compile=true", "matting.memory_offload=true"), torch.device("cpu"),
                        random_init=True, sam2_overrides=SMALL)
    assert seen["vos_optimized"] is True
    assert eng.offload is True and eng.make_segmenter("left").full.storage_device == torch.device("cpu")
    eng = DetSam2Engine(_cfg(tmp_path), torch.device("cpu"), random_init=True, sam2_overrides=SMALL)
    assert seen["vos_optimized"] is False and eng.offload is False
