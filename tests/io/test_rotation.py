"""Display-matrix rotation: a real MP4 written by PyAV with a rotation in its display matrix."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from vr180matte.io.errors import InputError
from vr180matte.io.probe import probe
from vr180matte.io.reader import FrameReader
from vr180matte.io.rotation import upright


def upright_sbs(i: int, w: int = 128, h: int = 64) -> np.ndarray:
    """An upright SBS frame with unmistakable corners: red top-left of the left eye, blue bottom-right of the right."""
    a = np.full((h, w, 3), 90, np.uint8)
    a[:12, :16] = (255, 0, 0)
    a[-12:, -16:] = (0, 0, 255)
    a[h // 2 - 2 : h // 2 + 2, :] = 30 + 10 * i
    return a


def write_rotated(path: Path, frames: list[np.ndarray], ccw: int, hflip: bool = False) -> Path:
    """Store every upright frame turned so that a player applying the display matrix shows it upright."""
    stored = [np.ascontiguousarray(np.rot90(f, k=-(ccw // 90))) for f in frames]
    if hflip:
        stored = [np.ascontiguousarray(s[:, ::-1]) for s in stored]
    h, w = stored[0].shape[:2]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = w, h, "yuv444p"
        s.options = {"qp": "0", "preset": "ultrafast"}
        s.set_display_rotation(ccw, hflip=hflip)
        for f in stored:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("ccw", [90, 180, 270])
def test_rotated_mp4_is_probed_as_displayed_and_read_upright(tmp_path, ccw):
    frames = [upright_sbs(i) for i in range(4)]
    path = write_rotated(tmp_path / f"rot{ccw}.mp4", frames, ccw)
    info = probe(path)
    assert info.rotation == ccw
    assert (info.width, info.height, info.eye_width, info.eye_height) == (128, 64, 64, 64)
    got = [f.rgb for f in FrameReader(path, info)]
    assert len(got) == 4
    for want, have in zip(frames, got):
        assert have.shape == want.shape and have.flags["C_CONTIGUOUS"]
        assert np.abs(have.astype(int) - want).max() <= 3  # lossless H.264 up to the RGB<->YUV rounding


def test_unrotated_file_reports_zero_and_is_not_copied(tmp_path):
    path = write_rotated(tmp_path / "plain.mp4", [upright_sbs(0)], 0)
    info = probe(path)
    assert info.rotation == 0 and (info.width, info.height) == (128, 64)
    rgb = np.zeros((4, 6, 3), np.uint8)
    assert upright(rgb, 0) is rgb


def test_a_mirroring_display_matrix_is_refused(tmp_path):
    path = write_rotated(tmp_path / "mirror.mp4", [upright_sbs(0)], 90, hflip=True)
    with pytest.raises(InputError, match="mirrors"):
        probe(path)


@pytest.mark.parametrize("ccw", [90, 270])
def test_the_rotation_sense_matches_an_independent_player(tmp_path, ccw):
    """OpenCV's own display-matrix handling (as a player would show the file) gives the same upright picture."""
    import cv2

    path = write_rotated(tmp_path / f"rot{ccw}.mp4", [upright_sbs(0)], ccw)
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    ok, bgr = cap.read()
    cap.release()
    assert ok
    ours = next(iter(FrameReader(path, probe(path)))).rgb
    assert bgr.shape == ours.shape
    assert np.abs(bgr[..., ::-1].astype(int) - ours).max() <= 3
