"""Hardware decode: the decision (codec, coded size, bit depth, chroma, device) and the CPU fallback, CPU-only."""
import logging

import av
import numpy as np
import pytest

from synth import gradient_sbs, write_video
from vr180matte.io import hwaccel as H
from vr180matte.io.probe import probe
from vr180matte.io.reader import FrameReader

CUDA = ("cuda", "drm")


@pytest.mark.parametrize(
    "codec,w,h,kw,hardware,why",
    [
        ("hevc", 6144, 3072, {}, True, "NVDEC hevc 6144x3072"),
        ("hevc", 8192, 4096, {"bit_depth": 10, "pix_fmt": "yuv420p10le"}, True, "NVDEC"),
        ("hevc", 8640, 4320, {}, False, "above NVDEC's 8192x8192"),
        ("h264", 4096, 2048, {}, True, "NVDEC h264"),
        ("h264", 5760, 2880, {}, False, "above NVDEC's 4096x4096"),
        ("h264", 3840, 1920, {"bit_depth": 10}, False, "up to 8-bit"),
        ("h264", 3840, 1920, {"pix_fmt": "yuv444p"}, False, "4:4:4"),
        ("prores", 3840, 1920, {}, False, "does not decode prores"),
    ],
)
def test_decision_follows_nvdec_limits(codec, w, h, kw, hardware, why):
    c = H.choose_decoder(codec, w, h, device="cuda:1", available=CUDA, resident=True, **kw)
    assert c.hardware is hardware and why in c.reason
    if hardware:
        assert c.device == "1"


def test_cpu_runs_and_builds_without_cuda_never_use_it():
    assert H.choose_decoder("hevc", 1920, 1080, device="cpu", available=CUDA, resident=True,
                            cores=1) == H.DecodeChoice(False, "CPU run")
    c = H.choose_decoder("hevc", 1920, 1080, device="cuda", available=("vaapi",), resident=True)
    assert not c.hardware and "no CUDA" in c.reason


def test_cuda_machine_without_a_resident_path_decodes_on_the_cpu():
    """Frames the stages read on the host: NVDEC + download measured slower than the CPU decoder on enough
    cores, so a CUDA run uses the CPU decoder, and only a machine with too few cores takes NVDEC."""
    many = H.choose_decoder("hevc", 6144, 3072, device="cuda", available=CUDA, cores=16)
    assert not many.hardware and "16 cores" in many.reason and "host" in many.reason
    edge = H.choose_decoder("hevc", 6144, 3072, device="cuda", available=CUDA, cores=H.NVDEC_BELOW_CORES)
    assert not edge.hardware
    few = H.choose_decoder("hevc", 6144, 3072, device="cuda", available=CUDA, cores=H.NVDEC_BELOW_CORES - 1)
    assert few.hardware and "cores" in few.reason
    # the threshold is where the measured rates cross
    assert H.NVDEC_BELOW_CORES * H.CPU_FPS_PER_CORE >= H.NVDEC_DOWNLOAD_FPS
    assert (H.NVDEC_BELOW_CORES - 1) * H.CPU_FPS_PER_CORE < H.NVDEC_DOWNLOAD_FPS


def test_a_cpu_only_machine_never_tries_nvdec(tmp_path, monkeypatch):
    """A CPU run reads the file without asking FFmpeg for any hardware device, and the reader reports the
    decoder that ran (stats.json's io block)."""
    path = write_video(tmp_path / "clip.mp4", lambda i: gradient_sbs(i, 128, 64), n=3, codec="libx265")

    def refuse(*a, **k):
        raise AssertionError("a CPU run asked for a hardware device")

    monkeypatch.setattr(av.codec.hwaccel, "HWAccel", refuse)
    monkeypatch.setattr(av.codec.hwaccel, "hwdevices_available", refuse)
    reader = FrameReader(path, probe(path), cores=1, threads=1)
    assert len(list(reader)) == 3
    assert reader.decoder == {"name": "hevc (CPU)", "hardware": False, "threads": 1, "threads_asked": 1,
                              "read_ahead": 8, "reason": "CPU run"}


def test_cuda_run_with_many_cores_reads_on_the_cpu(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.mp4", lambda i: gradient_sbs(i, 128, 64), n=3, codec="libx265")

    def refuse(*a, **k):
        raise AssertionError("NVDEC opened although the frames are used on the host")

    monkeypatch.setattr(av.codec.hwaccel, "HWAccel", refuse)
    reader = FrameReader(path, probe(path), decode_device="cuda", cores=16)
    assert len(list(reader)) == 3
    assert not reader.decoder["hardware"] and "16 cores" in reader.decoder["reason"]


def test_fallback_to_cpu_is_the_cpu_decoder_and_says_so(tmp_path, caplog):
    """A CUDA run on a machine whose NVDEC cannot be opened reads the file with the CPU decoder (so its frames
    are the CPU reader's, byte for byte) and says so in one log line and in the reader's decoder block. On a
    machine whose NVDEC opens, the fallback is not taken: test_nvdec_matches_the_cpu_decoder covers it."""
    path = write_video(tmp_path / "clip.mp4", lambda i: gradient_sbs(i, 128, 64), n=6, codec="libx265")
    info = probe(path)
    assert H.choose_decoder(info.codec, info.width, info.height, device="cuda", available=CUDA, cores=2).hardware
    if "cuda" in av.codec.hwaccel.hwdevices_available() and _nvdec_opens(path):
        pytest.skip("NVDEC opens on this machine, so the CPU fallback is not taken")
    cpu = [f.rgb for f in FrameReader(path, info)]
    with caplog.at_level(logging.INFO, logger="vr180matte.io.hwaccel"):
        reader = FrameReader(path, info, decode_device="cuda", cores=2)
        hw = [f.rgb for f in reader]
    assert len(hw) == len(cpu) == 6
    assert all(np.array_equal(a, b) for a, b in zip(hw, cpu))
    lines = [r.getMessage() for r in caplog.records if "on the CPU" in r.getMessage()]
    assert len(lines) == 1 and "hardware decode unavailable" in lines[0]
    assert not reader.decoder["hardware"] and "unavailable" in reader.decoder["reason"]


def test_nvdec_matches_the_cpu_decoder(tmp_path):
    """Two different decoders on the same file: NVDEC (through FFmpeg's CUDA hwaccel) and the CPU decoder give
    the same frames up to the colour conversion. Needs a machine where NVDEC opens."""
    path = write_video(tmp_path / "clip.mp4", lambda i: gradient_sbs(i, 128, 64), n=6, codec="libx265")
    if "cuda" not in av.codec.hwaccel.hwdevices_available():
        pytest.skip("this FFmpeg build or machine has no CUDA hardware decoder (NVDEC)")
    if not _nvdec_opens(path):
        pytest.skip("FFmpeg lists CUDA but NVDEC does not open on this machine (no NVIDIA GPU or driver)")
    info = probe(path)
    cpu = [f.rgb for f in FrameReader(path, info)]
    reader = FrameReader(path, info, decode_device="cuda", cores=1)
    hw = [f.rgb for f in reader]
    assert reader.decoder["hardware"], reader.decoder
    assert len(hw) == len(cpu) == 6
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 2 for a, b in zip(hw, cpu))


def _nvdec_opens(path) -> bool:
    try:
        with av.open(str(path), hwaccel=av.codec.hwaccel.HWAccel("cuda", allow_software_fallback=False)):
            return True
    except Exception:
        return False
