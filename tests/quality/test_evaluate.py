"""evaluate(): PNG folder written from GT scores perfectly; a ProRes 4444 .mov (PyAV, yuva444p10le) near-perfectly;
a degraded output scores worse; CLI table/JSON and clear errors."""
import json
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from synth import davis_frames
from vr180matte.cli import main as cli_main
from vr180matte.quality.evaluate import EvaluateError, evaluate

N = 4


def _gt(n=N):
    _, masks = davis_frames("davis2016_parkour", n)
    return masks, [cv2.imread(str(m), cv2.IMREAD_GRAYSCALE) for m in masks]


def _gt_folder(tmp_path, masks):
    d = tmp_path / "gt"
    d.mkdir()
    for i, m in enumerate(masks):
        cv2.imwrite(str(d / f"{i:05d}.png"), m)
    return d


def test_png_folder_from_gt_is_perfect(tmp_path):
    _, gts = _gt()
    out = tmp_path / "out"
    out.mkdir()
    for i, g in enumerate(gts):
        sbs = np.concatenate([g, g], axis=1)
        rgba = np.dstack([np.full(sbs.shape + (3,), 128, np.uint8), sbs])
        cv2.imwrite(str(out / f"frame_{i:06d}.png"), rgba)
    r = evaluate(out, _gt_folder(tmp_path, gts))  # one GT folder serves both eyes
    for e in ("left", "right", "mean"):
        assert r[e]["iou"] == 1.0 and r[e]["boundary_f"] == 1.0 and r[e]["mad"] == 0.0 and r[e]["dtssd"] == 0.0
    assert r["mean"]["frames"] == N


def test_davis_layout_and_degraded_output(tmp_path):
    _, gts = _gt()
    out = tmp_path / "out"
    out.mkdir()
    for i, g in enumerate(gts):
        shifted = np.roll(g, 3, axis=1)
        cv2.imwrite(str(out / f"{i:05d}.png"), shifted)  # grey matte PNGs, one eye
    seq = tmp_path / "seq"
    (seq / "Annotations").mkdir(parents=True)
    for i, g in enumerate(gts):
        cv2.imwrite(str(seq / "Annotations" / f"{i:05d}.png"), g)
    r = evaluate(out, seq, layout="mono")
    assert set(r) == {"left", "mean"}
    from vr180matte.quality.metrics import iou, mad

    expect_iou = np.mean([iou(np.roll(g, 3, axis=1), g) for g in gts])
    expect_mad = np.mean([mad(np.roll(g, 3, axis=1), g) for g in gts])
    assert r["left"]["iou"] == pytest.approx(expect_iou, abs=1e-4) and r["left"]["iou"] < 0.9
    assert r["left"]["mad"] == pytest.approx(expect_mad, abs=1e-2) and r["left"]["mad"] > 2


def _write_prores(path, frames_rgba):
    with av.open(str(path), "w") as c:
        st = c.add_stream("prores_ks", rate=Fraction(24))
        h, w = frames_rgba[0].shape[:2]
        st.width, st.height, st.pix_fmt = w, h, "yuva444p10le"
        st.options = {"profile": "4444"}
        for f in frames_rgba:
            vf = av.VideoFrame.from_ndarray(f, format="rgba").reformat(format="yuva444p10le")
            for p in st.encode(vf):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


def test_prores_4444_from_gt_is_near_perfect(tmp_path, capsys):
    _, gts = _gt(3)
    frames = []
    for g in gts:
        sbs = np.concatenate([g, g], axis=1)
        frames.append(np.dstack([np.full(sbs.shape + (3,), 90, np.uint8), sbs]))
    mov = tmp_path / "out.mov"
    _write_prores(mov, frames)
    gtdir = tmp_path / "lr"
    for e in ("left", "right"):
        (gtdir / e).mkdir(parents=True)
        for i, g in enumerate(gts):
            cv2.imwrite(str(gtdir / e / f"{i:05d}.png"), g)
    r = evaluate(mov, gtdir, eye="right")
    assert r["right"]["iou"] > 0.999 and r["right"]["boundary_f"] > 0.999 and r["right"]["mad"] < 1.0
    assert r["right"]["frames"] == 3
    assert cli_main(["evaluate", str(mov), str(gtdir), "--json"]) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["left"]["iou"] > 0.999 and "BoundF" in out.err


def test_errors(tmp_path, capsys):
    _, gts = _gt(1)
    gt = _gt_folder(tmp_path, gts)
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    cv2.imwrite(str(rgb / "0.png"), np.zeros((480, 1708, 3), np.uint8))
    with pytest.raises(EvaluateError, match="no alpha"):
        evaluate(rgb, gt)
    assert cli_main(["evaluate", str(tmp_path / "missing.mov"), str(gt)]) == 2
    err = capsys.readouterr().err
    assert "missing.mov" in err and err.count("error:") == 1


def test_top_bottom_and_right_first_layouts_split_like_the_pipeline(tmp_path):
    """evaluate splits eyes with the same layout table as the pipeline (sbs_rl and tb included)."""
    import cv2
    import numpy as np

    from vr180matte.io.layouts import get_layout
    from vr180matte.quality.evaluate import evaluate

    gt_left = np.zeros((24, 32), np.uint8)
    gt_left[4:20, 6:14] = 255
    gt_right = np.zeros_like(gt_left)
    gt_right[4:20, 10:30] = 255
    for name in ("left", "right"):
        (tmp_path / "gt" / name).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "gt" / "left" / "00000.png"), gt_left)
    cv2.imwrite(str(tmp_path / "gt" / "right" / "00000.png"), gt_right)
    for layout in ("tb", "sbs_rl", "sbs"):
        alpha = get_layout(layout).join(gt_left, gt_right)
        rgba = np.zeros((*alpha.shape, 4), np.uint8)
        rgba[..., 3] = alpha
        out = tmp_path / f"out_{layout}"
        out.mkdir()
        cv2.imwrite(str(out / "000000.png"), rgba)
        res = evaluate(out, tmp_path / "gt", layout=layout)
        assert res["left"]["iou"] == 1.0 and res["right"]["iou"] == 1.0, layout
    # read with the wrong layout, the eyes do not match their ground truth
    wrong = evaluate(tmp_path / "out_sbs_rl", tmp_path / "gt", layout="sbs")
    assert wrong["left"]["iou"] < 0.5
