"""MobileSAM predictor and engine with a random-init model on the CPU (and CUDA when present).

The encoder always runs at 1024x1024 (about 1.3 s per ``set_image`` on two shared cores), so the image
embedding is computed once per module where possible and every test keeps its ``set_image`` count low.
"""
from __future__ import annotations

import json
import logging

import av
import numpy as np
import pytest
import torch

from synth import gradient_sbs, write_video
from vr180matte.config import load_config
from vr180matte.engines.base import EngineError, Segmenter
from vr180matte.engines.mobilesam import MobileSamEngine, MobileSamSegmenter, boxes_from_masks, expand_boxes
from vr180matte.engines.mobilesam_predictor import MobileSamPredictor, SamKpi, load_mobile_sam

H, W = 192, 256  # non-square on purpose: exercises the resize-longest-side and pad/crop path
BOXES = np.array([[10, 20, 120, 150], [100, 40, 250, 190], [0, 0, 60, 60]], dtype=np.float32)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def _image(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    img[40:150, 60:180] = [250, 240, 230]  # a bright block gives the random model some structure
    return img


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = load_mobile_sam(None, "cpu", random_init=True)
    # TinyViT initialises its attention biases to zero; make them non-trivial so checkpoint tests would notice a
    # stale cached bias after loading.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("attention_biases"):
                p.normal_(0, 0.5)
    m.eval()  # refresh TinyViT's cached biases
    return m


@pytest.fixture(scope="module")
def predictor(model):
    p = MobileSamPredictor(model)
    p.set_image(torch.from_numpy(_image()))
    return p


# ----------------------------------------------------------------------------------------------- predictor
@pytest.mark.parametrize("as_numpy", [False, True])
@pytest.mark.parametrize("return_low_res", [False, True])
def test_output_types_devices_shapes(predictor, as_numpy, return_low_res):
    array = np.ndarray if as_numpy else torch.Tensor
    # single box: classic unbatched shapes
    masks, scores, low = predictor.predict(box=BOXES[0], as_numpy=as_numpy, return_low_res=return_low_res)
    assert isinstance(masks, array) and isinstance(scores, array)
    assert tuple(masks.shape) == (3, H, W) and tuple(scores.shape) == (3,)
    assert masks.dtype == (np.bool_ if as_numpy else torch.bool)
    assert scores.dtype == (np.float32 if as_numpy else torch.float32)
    if not as_numpy:
        assert masks.device == predictor.device and scores.device == predictor.device
    if return_low_res:
        assert isinstance(low, array) and tuple(low.shape) == (3, 256, 256)
        assert low.dtype == (np.float32 if as_numpy else torch.float32)
    else:
        assert low is None
    # batched boxes: one call, leading batch dimension
    masks, scores, low = predictor.predict(
        box=BOXES, multimask_output=False, return_logits=True, as_numpy=as_numpy, return_low_res=return_low_res
    )
    assert isinstance(masks, array) and tuple(masks.shape) == (3, 1, H, W)
    assert masks.dtype == (np.float32 if as_numpy else torch.float32)
    assert tuple(scores.shape) == (3, 1)
    assert (low is None) != return_low_res
    if return_low_res:
        assert tuple(low.shape) == (3, 1, 256, 256)


def test_batched_boxes_equal_one_by_one(predictor):
    masks, scores, low = predictor.predict(box=torch.from_numpy(BOXES), return_logits=True)
    assert masks.shape == (3, 3, H, W)
    for i, box in enumerate(BOXES):
        m1, s1, l1 = predictor.predict(box=box, return_logits=True)
        torch.testing.assert_close(m1, masks[i], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(s1, scores[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(l1, low[i], atol=1e-4, rtol=1e-4)
    # the boxes are different prompts, so the masks must differ (guards against ignoring the prompt)
    assert not torch.allclose(masks[0], masks[1])


def test_both_eyes_one_encoder_batch_equal_per_eye(model, monkeypatch):
    """set_image_batch: one encoder forward of batch 2 gives each eye's predictor the embedding and masks that
    set_image per eye gives."""
    from vr180matte.engines.mobilesam_predictor import set_image_batch

    left, right = _image(3), _image(4)[::-1].copy()
    solo = [MobileSamPredictor(model), MobileSamPredictor(model)]
    solo[0].set_image(torch.from_numpy(left))
    solo[1].set_image(torch.from_numpy(right))
    pair = [MobileSamPredictor(model), MobileSamPredictor(model)]
    calls = []
    real = model.image_encoder.forward
    monkeypatch.setattr(model.image_encoder, "forward", lambda x: calls.append(x.shape[0]) or real(x))
    set_image_batch(pair, [torch.from_numpy(left), right])
    assert calls == [2]
    for s, p in zip(solo, pair):
        assert p.original_size == s.original_size and p.input_size == s.input_size
        torch.testing.assert_close(p.get_image_embedding(), s.get_image_embedding(), atol=1e-4, rtol=1e-4)
        ms, _, _ = s.predict(box=BOXES[0], return_logits=True)
        mp, _, _ = p.predict(box=BOXES[0], return_logits=True)
        torch.testing.assert_close(mp, ms, atol=1e-3, rtol=1e-3)
    assert not torch.allclose(pair[0].get_image_embedding(), pair[1].get_image_embedding())
    with pytest.raises(ValueError, match="one image per predictor"):
        set_image_batch(pair, [left])


def test_legacy_mode_equals_numpy_of_resident(predictor):
    legacy = predictor.predict(box=BOXES[1], as_numpy=True, return_low_res=True)
    resident = predictor.predict(box=BOXES[1])  # defaults: tensors on the device, low-res included
    for a, b in zip(legacy, resident):
        np.testing.assert_array_equal(a, b.cpu().numpy())
    masks, scores, low = legacy
    # the classic SamPredictor.predict contract
    assert masks.dtype == np.bool_ and masks.shape == (3, H, W)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    assert low.dtype == np.float32 and low.shape == (3, 256, 256)
    # masks are the thresholded upsampled logits
    logits, _, _ = predictor.predict(box=BOXES[1], return_logits=True)
    np.testing.assert_array_equal(masks, (logits > 0).numpy())
    assert 0 < masks.mean() < 1
    batched = predictor.predict(box=BOXES, as_numpy=True)
    assert batched[0].shape == (3, 3, H, W) and batched[0].dtype == np.bool_
    assert batched[1].shape == (3, 3) and batched[2].shape == (3, 3, 256, 256)


def test_best_only_is_the_classic_callers_pick_upsampled_alone(predictor, monkeypatch):
    """best_only: each box's highest-scoring mask, its score and low-res logits, exactly what a classic caller
    takes from the three with argmax on the host; and only those masks are upsampled."""
    masks, scores, low = predictor.predict(box=BOXES, as_numpy=True)  # legacy: three candidates a box
    upsampled = []
    real = predictor.postprocess_masks
    monkeypatch.setattr(predictor, "postprocess_masks", lambda low_, *a: upsampled.append(low_.shape) or real(low_, *a))
    best, best_scores, best_low = predictor.predict(box=BOXES, best_only=True)
    assert upsampled == [(3, 1, 256, 256)]  # three boxes, one mask each: not nine
    pick = scores.argmax(1)
    rows = np.arange(len(BOXES))
    assert best.shape == (3, 1, H, W) and best.dtype == torch.bool
    np.testing.assert_array_equal(best[:, 0].numpy(), masks[rows, pick])
    np.testing.assert_array_equal(best_scores[:, 0].numpy(), scores[rows, pick])
    np.testing.assert_array_equal(best_low[:, 0].numpy(), low[rows, pick])
    one, _, _ = predictor.predict(box=BOXES[2], best_only=True)  # unbatched: (1, H, W)
    np.testing.assert_array_equal(one[0].numpy(), masks[2, pick[2]])
    # without multimask there is one candidate already: best_only changes nothing
    single = predictor.predict(box=BOXES, multimask_output=False, return_logits=True)[0]
    torch.testing.assert_close(predictor.predict(box=BOXES, multimask_output=False, return_logits=True,
                                                 best_only=True)[0], single, rtol=0, atol=0)


def test_half_precision_masks_differ_only_where_the_logit_rounds_to_zero(model, predictor):
    """mask_dtype bfloat16 (what the CUDA policy's autocast gives): the boolean masks are float32's except at
    pixels whose float32 logit is within bfloat16's rounding of zero; logits are never reduced."""
    half = MobileSamPredictor(model, mask_dtype=torch.bfloat16)
    half.features, half.original_size, half.input_size = predictor.features, predictor.original_size, predictor.input_size
    logits = predictor.predict(box=BOXES, return_logits=True)[0]
    exact = predictor.predict(box=BOXES)[0]
    masks = half.predict(box=BOXES)[0]
    assert masks.dtype == torch.bool and masks.shape == exact.shape
    differ = masks != exact
    assert differ.float().mean() < 1e-3
    # bfloat16 keeps 8 bits of mantissa: a flip needs a logit within ~2^-7 of the local logit scale of zero
    assert (logits[differ].abs() <= 2**-6 * logits.abs().amax()).all()
    assert half.predict(box=BOXES, return_logits=True)[0].dtype == torch.float32
    assert predictor.mask_dtype == torch.float32  # the CPU default: no autocast, full precision


def test_points_and_mask_input(predictor):
    pts = np.array([[80.0, 90.0], [20.0, 170.0]], dtype=np.float32)
    labels = np.array([1, 0])
    masks, scores, low = predictor.predict(point_coords=pts, point_labels=labels, multimask_output=False)
    assert masks.shape == (1, H, W) and scores.shape == (1,) and low.shape == (1, 256, 256)
    # feeding the low-res logits back changes the answer (the mask prompt is really used)
    again, _, _ = predictor.predict(point_coords=pts, point_labels=labels, mask_input=low, multimask_output=False,
                                    return_logits=True)
    plain, _, _ = predictor.predict(point_coords=pts, point_labels=labels, multimask_output=False, return_logits=True)
    assert again.shape == plain.shape and not torch.allclose(again, plain)
    with pytest.raises(ValueError, match="point_labels"):
        predictor.predict(point_coords=pts)


def test_preprocess_resizes_normalises_pads(model):
    img = _image(seed=3)[:64, :96]
    p = MobileSamPredictor(model)
    x, original, resized = p.preprocess(img)  # numpy RGB
    assert original == (64, 96) and resized == (683, 1024) and x.shape == (1, 3, 1024, 1024)
    y, _, _ = p.preprocess(torch.from_numpy(img[..., ::-1].copy()), image_format="BGR")
    torch.testing.assert_close(x, y)
    assert float(x[..., 683:, :].abs().max()) == 0.0  # padding below the resized image
    # a flat image maps to its normalised value everywhere inside the resized area
    flat, _, _ = p.preprocess(np.full((10, 5, 3), 200, dtype=np.uint8))
    expected = (200 - model.pixel_mean.view(3)) / model.pixel_std.view(3)
    torch.testing.assert_close(flat[0, :, 500, 200], expected)
    assert float(flat[0, :, :, 512:].abs().max()) == 0.0


def test_kpi_event_fields(predictor, caplog):
    kpi_before = predictor.kpi.count
    with caplog.at_level(logging.INFO, logger="vr180matte.kpi"):
        predictor.predict(box=BOXES, as_numpy=False, return_low_res=False)
        predictor.predict(box=BOXES[0], as_numpy=True, return_low_res=True)
    records = [r for r in caplog.records if r.name == "vr180matte.kpi"]
    assert len(records) == 2
    first, second = (r.kpi for r in records)
    assert first["event"] == "sam_predict_output"
    assert first["as_numpy"] is False and first["return_low_res"] is False
    assert first["mask_device"] == "cpu" and first["iou_device"] == "cpu" and first["low_device"] == "skipped"
    assert first["latency_ms"] > 0
    assert second["as_numpy"] is True and second["low_device"] == "cpu"
    # the message carries the same fields as greppable JSON
    msg = records[0].getMessage()
    assert msg.startswith("sam_predict_output ")
    assert json.loads(msg[len("sam_predict_output "):])["low_device"] == "skipped"
    assert predictor.kpi.count == kpi_before + 2
    summary = predictor.kpi.summary()
    assert summary["predicts"] == predictor.kpi.count and summary["masks_left_gpu"] == 0
    assert summary["mean_latency_ms"] > 0


def test_kpi_counts_masks_leaving_a_gpu():
    kpi = SamKpi("cuda:0")  # bookkeeping only: no CUDA call is made without timing
    kpi.record(0.0, as_numpy=True, return_low_res=True, masks=np.zeros(1), scores=np.zeros(1), low=np.zeros(1))
    kpi.record(0.0, as_numpy=False, return_low_res=False, masks=torch.zeros(1, device="meta"), scores=None, low=None)
    assert kpi.summary()["masks_left_gpu"] == 2  # numpy and a non-CUDA tensor both count
    assert kpi.summary()["latency_synced"] is False


# ----------------------------------------------------------------------------------------------- checkpoint
def test_checkpoint_roundtrip_through_engine(model, predictor, tmp_path):
    state = model.state_dict()
    assert all(k.split(".")[0] in ("image_encoder", "prompt_encoder", "mask_decoder") for k in state)
    assert "image_encoder.patch_embed.seq.0.c.weight" in state and "mask_decoder.iou_token.weight" in state
    torch.save(state, tmp_path / "mobile_sam.pt")
    # No yolov8n.pt in the folder: the engine falls back to the bundled YOLOv8s detector and says so.
    cfg = load_config(None, [f"models.dir={tmp_path}", "hardware.device=cpu"])
    engine = MobileSamEngine(cfg, torch.device("cpu"))
    assert engine.detector_info["source"] == "bundled"
    assert engine.model is not model
    loaded_state = engine.model.state_dict()
    assert loaded_state.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(loaded_state[k], v), k
    # TinyViT's cached attention biases (not in the state dict) must follow the loaded weights
    caches = [(a, b) for a, b in zip(engine.model.modules(), model.modules()) if hasattr(a, "ab")]
    assert caches and all(torch.equal(a.ab, b.ab) for a, b in caches)
    # same prompts on the same embedding give the same answer (the encoder weights are compared above:
    # one 1024 px encode is ~1.3 s here, so it is shared instead of recomputed)
    loaded = MobileSamPredictor(engine.model)
    loaded.features, loaded.original_size, loaded.input_size = (
        predictor.features, predictor.original_size, predictor.input_size)
    a = loaded.predict(box=BOXES, return_logits=True)
    b = predictor.predict(box=BOXES, return_logits=True)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_missing_checkpoint_is_one_line_error(tmp_path):
    cfg = load_config(None, [f"models.dir={tmp_path}"])
    with pytest.raises(EngineError) as err:
        MobileSamEngine(cfg, torch.device("cpu"))
    msg = str(err.value)
    assert "\n" not in msg and "mobile_sam.pt" in msg and str(tmp_path) in msg and "https://" in msg
    with pytest.raises(EngineError, match="not found") as err:
        load_mobile_sam(tmp_path / "nope.pt")
    assert "\n" not in str(err.value)


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(EngineError, match="cannot read") as err:
        load_mobile_sam(junk)
    assert "\n" not in str(err.value)
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": {"image_encoder.foo": torch.zeros(1)}}, wrong)
    with pytest.raises(EngineError, match="does not match") as err:
        load_mobile_sam(wrong)
    assert "\n" not in str(err.value) and "missing" in str(err.value)


# ----------------------------------------------------------------------------------------------- segmenter
def test_boxes_from_masks_and_expand():
    m = torch.zeros(3, 20, 30, dtype=torch.bool)
    m[0, 5:10, 2:7] = True
    m[1, 0:20, 29] = True
    boxes, valid = boxes_from_masks(m)
    assert valid.tolist() == [True, True, False]
    assert boxes[0].tolist() == [2, 5, 7, 10] and boxes[1].tolist() == [29, 0, 30, 20]
    grown = expand_boxes(boxes[:2], 0.2, 30, 20)
    assert grown[0].tolist() == pytest.approx([1, 4, 8, 11]) and grown[1].tolist() == pytest.approx([28.8, 0, 30, 20])


def test_segmenter_one_batched_predict_per_frame_and_box_follow(model):
    kpi = SamKpi("cpu")
    seg = MobileSamSegmenter(MobileSamPredictor(model, kpi=kpi), view="left", box_margin=0.1)
    assert isinstance(seg, Segmenter)
    img = torch.from_numpy(_image())
    assert seg.segment(0, img) == {} and kpi.count == 0  # no tracks: no encoder, no predict
    seg.add_prompt(1, box=BOXES[0])
    mask = torch.zeros(H, W)
    mask[30:100, 150:220] = 1.0
    seg.add_prompt(2, mask=mask)
    torch.testing.assert_close(seg._boxes[2], torch.tensor([150.0, 30, 220, 100]))
    seg.add_prompt(3, mask=torch.zeros(H, W))  # empty mask on a new track: nothing to follow
    assert 3 not in seg._boxes
    out = seg.segment(0, img)
    assert kpi.count == 1  # both tracks in ONE predict
    assert set(out) == {1, 2}
    for prob in out.values():
        assert prob.shape == (H, W) and prob.dtype == torch.float32 and prob.device == seg.device
        assert 0.0 <= float(prob.min()) and float(prob.max()) <= 1.0
    out[1].mul_(1.0)  # downstream stages may edit masks in place (not inference-mode tensors)
    # the next prompt is each track's own mask box, grown by the margin
    for tid in (1, 2):
        fg = out[tid] > 0.5
        if fg.any():
            tight, _ = boxes_from_masks(fg[None])
            torch.testing.assert_close(seg._boxes[tid], expand_boxes(tight, 0.1, W, H)[0])
    with pytest.raises(ValueError):
        seg.add_prompt(4)
    seg.remove_track(1)
    assert set(seg._boxes) == {2}
    seg.reset()
    assert seg._boxes == {} and not seg.predictor.is_image_set


# ----------------------------------------------------------------------------------------------- engine
def _decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_engine_end_to_end_on_sbs_clip(tmp_path):
    """A real encoded SBS clip, both eyes: detector prompts (or the known square) -> masks for every frame."""
    n, w, h = 2, 256, 128  # 2 frames x 2 eyes = 4 encodes at 1024 px
    clip = write_video(tmp_path / "sbs.mp4", lambda i: gradient_sbs(i, w, h), n=n)
    frames = _decode(clip)
    assert len(frames) == n and frames[0].shape == (h, w, 3)
    # roi off: this checks the bare per-eye predictor (engines/roi.py's crops are tested in test_roi.py)
    cfg = load_config(None, ["hardware.device=cpu", "detection.confidence_threshold=0.0", "matting.roi_max_frac=0"])
    torch.manual_seed(0)
    engine = MobileSamEngine(cfg, torch.device("cpu"), random_init=True)
    assert engine.name == "mobilesam"
    segs = {v: engine.make_segmenter(v) for v in ("left", "right")}
    assert segs["left"].predictor.model is segs["right"].predictor.model  # eyes share one model
    assert segs["left"].predictor is not segs["right"].predictor  # but not the per-image state

    ew, s = w // 2, max(h // 4, 2)
    results: dict[str, list[dict[int, torch.Tensor]]] = {"left": [], "right": []}
    for i, sbs in enumerate(frames):
        views = {"left": torch.from_numpy(sbs[:, :ew]), "right": torch.from_numpy(sbs[:, ew:])}
        for view, img in views.items():
            if i == 0:  # the square "person" of gradient_sbs, at its known disparity in the right eye
                x0 = ew // 3 - (8 if view == "right" else 0)
                segs[view].add_prompt(7, box=np.array([x0, h // 3, x0 + s, h // 3 + s], dtype=np.float32))
            results[view].append(segs[view].segment(i, img))
    for view in ("left", "right"):
        assert len(results[view]) == n
        for out in results[view]:
            assert set(out) == {7}
            prob = out[7]
            assert prob.shape == (h, ew) and prob.dtype == torch.float32 and prob.device.type == "cpu"
            assert torch.isfinite(prob).all() and 0 <= float(prob.min()) <= float(prob.max()) <= 1
        box = segs[view]._boxes[7]
        assert (box[:2] >= 0).all() and box[2] <= ew and box[3] <= h and (box[2:] > box[:2]).all()
    summary = engine.kpi_summary()
    assert summary["predicts"] == 2 * n and summary["masks_left_gpu"] == 0 and summary["as_numpy"] == 0
    assert summary["return_low_res"] == 0  # resident mode on the hot path
    assert engine.kpi_warning() is None


def test_engine_detector_is_yolo():
    """The engine's detector is a YoloDetector: random-init when asked, else (no official file in the sealed
    models folder) the bundled trained YOLOv8s, which finds the person in a DAVIS frame."""
    import cv2

    from synth import davis_frames
    from vr180matte.engines.yolo import YoloDetector

    cfg = load_config(None, ["hardware.device=cpu", "detection.confidence_threshold=0.0"])
    engine = MobileSamEngine(cfg, torch.device("cpu"), random_init=True)
    det = engine.make_detector()
    assert type(det) is YoloDetector and det.name == "yolov8" and det.source == "random"
    dets = det.detect(torch.from_numpy(gradient_sbs(0, 128, 64)[:, :64].copy()))
    for d in dets:
        assert d.box.shape == (4,) and 0.0 <= d.score <= 1.0

    small = ["hardware.device=cpu", "detection.image_size=640", "detection.upscale=1.0"]  # one 640 tile: cheap
    trained = MobileSamEngine(load_config(None, small), torch.device("cpu"), random_init=True,
                              random_init_detector=False).make_detector()
    assert type(trained) is YoloDetector and trained.source == "bundled"
    frame = cv2.cvtColor(cv2.imread(str(davis_frames("davis2016_parkour", 1)[0][0])), cv2.COLOR_BGR2RGB)
    people = trained.detect(torch.from_numpy(np.ascontiguousarray(frame)))
    assert len(people) >= 1 and max(d.score for d in people) >= 0.5


@pytest.mark.slow
def test_pipeline_run_with_mobilesam_engine(tmp_path, monkeypatch):
    """The whole product path (decode, detect, track, segment, stereo, refine, encode, stats.json) on this engine."""
    import vr180matte.pipeline as pipeline

    clip = write_video(tmp_path / "sbs.mp4", lambda i: gradient_sbs(i, 256, 128), n=3)
    out = tmp_path / "out"
    pipeline.run(clip, None, out, ["hardware.device=cpu", "matting.engine=mobilesam", "output.codec=png",
                                   "detection.confidence_threshold=0.0", "detection.max_persons=2"], quiet=True,
                 engine=lambda cfg, device: MobileSamEngine(cfg, device, random_init=True))
    stats = json.loads((out / "sbs.stats.json").read_text())
    assert stats["engine"] == "mobilesam" and stats["frames_out"] == 3
    kpi = stats["kpi"]
    assert kpi["event"] == "sam_predict_output" and kpi["masks_left_gpu"] == 0
    assert 0 < kpi["predicts"] <= 6  # at most one batched predict per frame and eye
