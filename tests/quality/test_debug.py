"""Detection video (real H.264 through PyAV) and confidence maps."""
import av
import cv2
import numpy as np
import torch

from vr180matte.engines.base import Detection, FrameMatte, TrackMask
from vr180matte.quality.debug import DetectionVisualizer, save_confidence_map


def _fm(i, x0):
    prob = torch.zeros(60, 80)
    prob[20:50, x0 : x0 + 20] = 1.0
    box = np.array([x0, 20, x0 + 20, 50], np.float32)
    return FrameMatte(i, {3: TrackMask(3, prob, box, 0.91)}, [Detection(box, 0.91)])


def test_detection_video(out_dir):
    path = out_dir / "clip.detections.mp4"
    vis = DetectionVisualizer(path, 640, 240, 24, max_side=320)  # eyes 320x240 at scale 0.25 -> 80x60 masks
    for i in range(5):
        sbs = np.full((240, 640, 3), 40, np.uint8)
        vis.write(sbs, _fm(i, 10 + i), _fm(i, 30))
    vis.close()
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (120, 320, 3)
    # the track colour (#3 -> (0, 130, 200)) is drawn inside the right eye's box (x 30..50 of 80 -> 60..100 px)
    box_px = frames[0][15:60, 160 + 60 : 160 + 100].reshape(-1, 3).astype(int)
    assert (np.abs(box_px - [0, 130, 200]).sum(1) < 60).any()
    assert np.abs(frames[0][100, 150].astype(int) - 40).max() < 10  # background untouched


def test_confidence_map(out_dir):
    p = torch.linspace(0, 1, 1024).repeat(600, 1)
    save_confidence_map(out_dir / "c.png", p)
    img = cv2.imread(str(out_dir / "c.png"))
    assert img.shape == (300, 512, 3)
    assert tuple(img[0, 0]) != tuple(img[0, -1])  # 0 and 1 map to different colours


def test_person_trace_records_where_each_person_went(tmp_path):
    """Real views (the embedded segmenter) fed a true person box and a box on empty background: the trace says the
    person was segmented in both eyes (seeded into the right one), the empty box was stillborn, and the table has a
    row for each."""
    import sys
    from pathlib import Path as _P

    import pytest

    pytest.importorskip("mediapipe")
    sys.path.insert(0, str(_P(__file__).resolve().parents[1] / "stereo"))
    from stereo_synth import pasted
    from vr180matte.config import load_config
    from vr180matte.engines.base import Detection
    from vr180matte.engines.embedded_segmenter import EmbeddedSegmenter
    from vr180matte.quality.debug import PersonTrace
    from vr180matte.stereo.consistency import StereoStage
    from vr180matte.track.ids import IdAllocator
    from vr180matte.track.view_matter import ViewMatter

    left, right, gl, _ = pasted(256, [("davis2016_dance-twirl", 10, 60.0, 100.0, 60.0, 3.0)])
    ys, xs = np.nonzero(gl[0])
    person = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    empty = np.array([10, 200, 80, 250], np.float32)  # pavement, nobody there, too large for the box prior
    cfg = load_config(None, ["hardware.device=cpu"])
    ids = IdAllocator()
    views = [ViewMatter(e, EmbeddedSegmenter(e), None, ids=ids) for e in ("left", "right")]
    stage = StereoStage(cfg, *views, None)
    trace = PersonTrace()
    stage.attach(trace=trace)
    stage.reset()
    li, ri = torch.from_numpy(left), torch.from_numpy(right)
    for t in range(3):
        dets = [Detection(box=person, score=0.9), Detection(box=empty, score=0.45)] if t == 0 else None
        lm = views[0].step(t, li, **({"detections": dets, "run_detector": False} if dets else {"run_detector": False}))
        seeds = {tid: (tm.box, tm.prob) for tid, tm in lm.tracks.items() if tm.box is not None
                 and tid not in views[1].live_ids}
        views[1].step(t, ri, seeds=seeds, run_detector=False)
    s = trace.summary()
    rows = {p["id"]: p for p in s["persons"]}
    assert s["fates"] == {"matted": 1, "never_segmented (stillborn)": 1}
    matted = next(p for p in rows.values() if p["fate"] == "matted")
    assert matted["left"]["segmented"] == 3 and matted["right"]["origin"] == "seed"
    assert matted["left"]["area_px_mean"] > 0.5 * gl[0].sum()
    still = next(p for p in rows.values() if p["fate"] != "matted")
    assert still["left"]["end_reason"] == "stillborn" and still["det_score"] == 0.45
    trace.write_table(tmp_path / "p.tsv")
    lines = (tmp_path / "p.tsv").read_text().splitlines()
    assert len(lines) == 3 and "stillborn" in lines[1] + lines[2]
