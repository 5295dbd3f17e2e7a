"""A generated demo clip: a real (public-domain) person photo in a VR180 side-by-side frame, with a tone.

The person is NASA astronaut Eileen Collins (``skimage.data.astronaut()``, a public-domain NASA photo that
ships inside the scikit-image wheel), so a fresh machine can run the real pipeline with no download.
Both eyes hold the same scene with the person at a nearer depth (larger disparity) than the background.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)


def _background(eye: int, t: int) -> np.ndarray:
    yy, xx = np.mgrid[0:eye, 0:eye].astype(np.float32) / eye
    r = 90 + 60 * np.sin(6 * xx + 0.05 * t)
    g = 110 + 50 * np.cos(5 * yy)
    b = 140 + 40 * np.sin(3 * (xx + yy))
    return np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)


def tone(seconds: float, rate: int = 48000, freq: float = 440.0, channels: int = 2, level: float = 0.1) -> np.ndarray:
    """A sine tone as (channels, samples) float32, the layout PyAV's planar ``fltp`` frames take."""
    t = np.arange(int(seconds * rate)) / rate
    wave = (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[None, :], channels, axis=0)


def mux_audio(container: "av.container.OutputContainer", stream, samples: np.ndarray, rate: int) -> None:
    """Encode (channels, samples) float32 audio into ``stream`` of ``container`` and flush it."""
    layout = "stereo" if samples.shape[0] == 2 else "mono"
    for start in range(0, samples.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start : start + 1024]), format="fltp",
                                           layout=layout)
        frame.sample_rate, frame.pts = rate, start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def make_sample(path: Path, frames: int = 48, eye: int = 1024, fps: int = 24, disparity: int = 12) -> Path:
    """Write ``path`` (H.264 + AAC, VR180 metadata) and return it. Deterministic."""
    import cv2
    from skimage import data

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    person = data.astronaut()
    size = eye // 2
    person = cv2.resize(person, (size, size), interpolation=cv2.INTER_AREA)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    rate = 48000
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = eye * 2, eye, "yuv420p"
        vs.options = {"crf": "18", "preset": "veryfast"}
        aus = out.add_stream("aac", rate=rate)
        aus.layout = "stereo"
        for i in range(frames):
            bg = _background(eye, i)
            left, right = bg.copy(), np.roll(bg, -2, axis=1)  # background far away: small disparity
            x = eye // 4 + int(40 * np.sin(i / 8))
            y = eye // 3
            left[y : y + size, x : x + size] = person
            right[y : y + size, x - disparity : x - disparity + size] = person
            frame = av.VideoFrame.from_ndarray(np.concatenate([left, right], axis=1), format="rgb24")
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        mux_audio(out, aus, tone(frames / fps, rate), rate)
    from .io.spherical import write_spherical

    write_spherical(tmp, stereo="left-right", projection="equirectangular", fov_deg=180.0)
    tmp.replace(path)
    log.info("sample clip written: %s (%d frames, %dx%d)", path, frames, eye * 2, eye)
    return path
