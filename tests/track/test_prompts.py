"""The manual override file (input.prompts / --prompts): validation, what an added box and an excluded region do
with the real embedded segmenter on real DAVIS frames, and the CLI end to end (one-line errors, exit 2; an excluded
region leaves no alpha in the encoded output)."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from synth import davis_frames, davis_sbs_clip
from vr180matte.config import load_config
from vr180matte.errors import ConfigError
from vr180matte.track.prompts import load_prompts, prompts_digest

EYE_W, EYE_H = 854, 480


def _write(tmp_path, doc, name="prompts.json"):
    p = tmp_path / name
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return p


@pytest.mark.parametrize("doc, needle", [
    ({"prompts": [{"frame": -1, "eye": "left", "add": [[1, 1, 5, 5]]}]}, "frame must be a source frame number"),
    ({"prompts": [{"frame": 10, "eye": "left", "add": [[1, 1, 5, 5]]}]}, "past the last frame"),
    ({"prompts": [{"frame": 1, "eye": "middle", "add": [[1, 1, 5, 5]]}]}, "eye must be one of left, right, both"),
    ({"prompts": [{"frame": 1, "eye": "left", "add": [[5, 1, 1, 5]]}]}, "is empty"),
    ({"prompts": [{"frame": 1, "eye": "left", "add": [[1, 1, 900, 5]]}]}, "outside the 854x480 eye"),
    ({"prompts": [{"frame": 1, "eye": "left", "add": [[1, 1, 5]]}]}, "a box is [x0, y0, x1, y1]"),
    ({"prompts": [{"frame": 1, "eye": "left", "boxes": [[1, 1, 5, 5]]}]}, "unknown key 'boxes'"),
    ({"prompts": [{"frame": 3, "to": 2, "exclude": [[1, 1, 5, 5]]}]}, "to 2 is before frame 3"),
    ({"prompts": [{"frame": 3}]}, "neither add nor exclude"),
    ("{not json", "not valid JSON"),
])
def test_bad_prompts_are_one_line_config_errors(tmp_path, doc, needle):
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as exc:
        load_prompts(str(path), "clip", 10, EYE_W, EYE_H)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg and "prompts.json" in msg


def test_prompts_scale_to_the_processing_image_and_digest_follows_content(tmp_path):
    path = _write(tmp_path, {"prompts": [
        {"frame": 2, "eye": "right", "add": [[100, 40, 140, 120]]},
        {"frame": 0, "to": 4, "eye": "both", "exclude": [[0, 0, 427, 240]]},
    ]}, name="clip.prompts.json")
    p = load_prompts(str(tmp_path / "{stem}.prompts.json"), "clip", 10, EYE_W, EYE_H)
    assert p.adds(1, (240, 427)) == []
    (eye, box), = p.adds(2, (240, 427))
    assert eye == "right" and np.allclose(box, [50, 20, 70, 60], atol=0.1)
    keep = p.keep_mask(4, "left", (240, 427), "cpu")
    assert keep[:120, :213].sum() == 0 and keep[120:, :].min() == 1 and keep[:, 214:].min() == 1
    assert p.keep_mask(5, "left", (240, 427), "cpu") is None
    d1 = prompts_digest(str(path))
    path.write_text(path.read_text().replace("140", "141"))
    assert prompts_digest(str(path)) != d1 and prompts_digest("") == "" and prompts_digest(str(tmp_path / "x")) == "missing"


def _stage(prompts, mode="master_slave"):
    """A stereo stage with the real embedded segmenter and NO detector: the prompts file is the only source."""
    pytest.importorskip("mediapipe")
    from vr180matte.engines.embedded_segmenter import EmbeddedSegmenter
    from vr180matte.stereo.consistency import StereoStage
    from vr180matte.track.ids import IdAllocator
    from vr180matte.track.view_matter import ViewMatter

    cfg = load_config(None, [f"stereo.consistency_mode={mode}", "hardware.device=cpu"])
    ids = IdAllocator()
    views = [ViewMatter(e, EmbeddedSegmenter(e), None, ids=ids) for e in ("left", "right")]
    stage = StereoStage(cfg, *views, None)
    stage.attach(prompts=prompts)
    stage.reset()
    return stage


def _davis(n: int, shift: int = 6):
    frames, masks = davis_frames("davis2016_parkour", n)
    out = []
    for f, m in zip(frames, masks):
        rgb = cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (EYE_W // 2, EYE_H // 2),
                         interpolation=cv2.INTER_AREA)
        gt = cv2.resize((cv2.imread(str(m), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8), (EYE_W // 2, EYE_H // 2),
                        interpolation=cv2.INTER_NEAREST)
        right = np.roll(rgb, -shift, axis=1)
        out.append((torch.from_numpy(rgb), torch.from_numpy(np.ascontiguousarray(right)), gt))
    return out


@pytest.mark.parametrize("eye", ["left", "right"])
def test_added_box_gives_a_track_from_that_frame_on_in_both_eyes(tmp_path, eye):
    """A box for ONE eye at frame 2: no person before, the same person (same id) in both eyes from frame 2 on,
    on the runner; the box given for the right eye is carried to the left by the stereo stage."""
    torch.set_num_threads(2)
    clip = _davis(5)
    _, _, _ = clip[2]
    ys, xs = np.nonzero(clip[2][2])
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    if eye == "right":
        x0, x1 = x0 - 6, x1 - 6
    box = [float(v) * 2 for v in (x0, y0, x1, y1)]  # source eye pixels (the test eyes are processed at half size)
    path = _write(tmp_path, {"prompts": [{"frame": 2, "eye": eye, "add": [box]}]})
    stage = _stage(load_prompts(str(path), "clip", 5, EYE_W, EYE_H))
    tids = set()
    for t, (li, ri, gt) in enumerate(clip):
        res = stage.step(t, li, ri)
        live_l = {i for i, tm in res.left.tracks.items() if tm.box is not None}
        live_r = {i for i, tm in res.right.tracks.items() if tm.box is not None}
        if t < 2:
            assert not live_l and not live_r
            continue
        assert live_l == live_r and len(live_l) == 1, (t, live_l, live_r)
        tid = next(iter(live_l))
        tids.add(tid)
        pred = (res.left.tracks[tid].prob > 0.5).numpy()
        iou = (pred & (gt > 0)).sum() / max((pred | (gt > 0)).sum(), 1)
        assert iou > 0.5, (t, iou)
    assert len(tids) == 1
    assert stage.prompts.stats["added"] == 1


def test_excluded_region_drops_detections_and_zeroes_masks():
    """A region excluded in the left eye: a detection inside it starts nothing and no mask reaches into it."""
    from vr180matte.engines.base import Detection
    from vr180matte.track.prompts import PromptEntry, Prompts

    clip = _davis(3)
    ys, xs = np.nonzero(clip[0][2])
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    g = np.array([max(0, box[0] - 20), 0, min(427, box[2] + 20), 240], np.float32)  # processing px
    ex = Prompts([PromptEntry(0, 2, "left", exclude=(tuple(float(v) * 2 for v in g),))], EYE_W, EYE_H, "x")
    stage = _stage(ex, mode="independent")
    det = [Detection(box=box, score=0.9)]
    x0, x1 = int(g[0]), int(g[2])
    for t, (li, ri, gt) in enumerate(clip):
        lm = stage.left.step(t, li, detections=det if t == 0 else None, run_detector=False)
        rm = stage.right.step(t, ri, detections=[Detection(box=box - [6, 0, 6, 0], score=0.9)] if t == 0 else None,
                              run_detector=False)
        assert not lm.tracks or all(float(tm.prob[:, x0:x1].max()) == 0.0 for tm in lm.tracks.values())
        assert rm.tracks and max(float((tm.prob > 0.5).sum()) for tm in rm.tracks.values()) > 100
    assert ex.stats["detections_excluded"] >= 1


def test_cli_bad_prompts_file_exits_2_with_one_line(tmp_path):
    clip = davis_sbs_clip(tmp_path / "clip.mp4", count=3)
    bad = _write(tmp_path, {"prompts": [{"frame": 7, "eye": "left", "add": [[1, 1, 5, 5]]}]})
    p = subprocess.run([sys.executable, "-m", "vr180matte", "run", str(clip), "-o", str(tmp_path / "out"),
                        "--prompts", str(bad), "-q"], capture_output=True, text=True, timeout=120)
    err = [line for line in p.stderr.strip().splitlines() if line.startswith("vr180matte: error:")]
    assert p.returncode == 2 and len(err) == 1 and "past the last frame of the video (2)" in err[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "out" / ".vr180matte" / "clip").exists()


@pytest.mark.slow
def test_cli_excluded_region_leaves_no_alpha_and_changes_the_resume_identity(tmp_path):
    """End to end: the runner is matted; with the left half of the left eye excluded on frames 1-2, those pixels
    carry alpha 0 exactly in the encoded output, the rest of the frame is unchanged in kind; the prompts file's
    content is part of the plan digest (resume identity) and recorded in stats.json."""
    import av

    from vr180matte.cli import main
    from vr180matte.pipeline.plan import make_plan

    clip = davis_sbs_clip(tmp_path / "clip.mp4", count=3)
    ys, xs = np.nonzero(cv2.imread(str(davis_frames("davis2016_parkour", 3)[1][1]), cv2.IMREAD_GRAYSCALE) > 127)
    x0, x1 = int(max(0, xs.min() - 40)), int(min(EYE_W, xs.max() + 41))  # the runner's columns on frame 1, grown
    ex = _write(tmp_path, {"prompts": [{"frame": 1, "to": 2, "eye": "left", "exclude": [[x0, 0, x1, EYE_H]]}]})
    sets = ["--set", "processing.scale_factor=0.5", "--set", "hardware.device=cpu",
            "--set", "debugging.person_trace=true"]
    assert main(["run", str(clip), "-o", str(tmp_path / "out"), "--prompts", str(ex), "-q", *sets]) == 0
    with av.open(str(tmp_path / "out" / "clip.alpha.mov")) as c:
        alphas = [f.to_ndarray(format="rgba")[..., 3] for f in c.decode(video=0)]
    assert len(alphas) == 3
    assert alphas[0][:, x0:x1].max() > 200  # frame 0 is not excluded: the runner is there
    for a in alphas[1:]:
        assert a[:, x0:x1].max() == 0
        assert a[:, EYE_W + x0:EYE_W + x1].max() > 200  # the right eye is not excluded
    stats = json.loads((tmp_path / "out" / "clip.stats.json").read_text())
    assert stats["prompts"]["entries"] == 1
    assert stats["person_trace"]["persons"] and (tmp_path / "out" / "clip.persons.tsv").is_file()
    cfg = load_config(None, [f"input.prompts={ex}"])
    d1 = make_plan(clip, cfg, tmp_path / "o2").digest
    ex.write_text(ex.read_text().replace(f"{x0}, 0", f"{x0 + 1}, 0"))
    assert make_plan(clip, cfg, tmp_path / "o2").digest != d1
