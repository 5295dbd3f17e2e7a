"""Probe a video file: geometry, exact frame rate and frame count, audio streams, VR180 stereo metadata.

Why a full demux pass: the frame count has to be exact (the output is verified against it, and a truncated file must
be caught before hours of processing), and variable frame rate can only be seen in the packet timestamps. Demuxing
reads the file once but decodes nothing, so it costs disk bandwidth only (about a second per GB).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vr180matte.io.errors import InputError
from vr180matte.io.rotation import displayed_size, probe_rotation

log = logging.getLogger(__name__)

#: stereo metadata value (st3d) -> our layout name
_STEREO_TO_LAYOUT = {"left-right": "sbs", "right-left": "sbs_rl", "top-bottom": "tb", "mono": "mono"}


@dataclass
class AudioStreamInfo:
    """One audio stream of the input (copied to the output packet by packet)."""

    index: int
    codec: str
    sample_rate: int
    channels: int
    duration_s: float | None


@dataclass
class VideoInfo:
    """What the pipeline needs to know about an input before decoding it."""

    path: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frame_count: int
    duration_s: float
    codec: str
    pix_fmt: str
    bit_depth: int
    is_vfr: bool
    audio_streams: list[AudioStreamInfo]
    layout: str | None  # "sbs" | "sbs_rl" (right eye stored first) | "tb" | "mono" | None (no metadata)
    projection: str | None
    fov_deg: float | None
    eye_width: int
    eye_height: int
    #: presentation timestamps of every frame, sorted (stream time_base); lets the reader map a decoded frame to its
    #: exact index after a seek. Not part of the JSON view.
    frame_pts: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: container index of the video stream read (cover-art streams are skipped)
    stream_index: int = 0
    #: FFmpeg colour tags of the video stream (AVColorSpace, primaries, transfer, range as ints); the writer encodes
    #: with the same matrix and the same tags so the output looks like the input in every player
    color: dict = field(default_factory=dict)
    #: display-matrix rotation (degrees counter-clockwise, 0/90/180/270); ``width``/``height`` are as displayed and
    #: the reader turns every frame upright (io/rotation.py)
    rotation: int = 0
    #: streams that are neither the video nor audio (subtitles, timecode/data tracks, attachments):
    #: ``{"index", "type", "codec"}`` each; the output carries the timecode, the rest is dropped (said in stats.json)
    other_streams: list = field(default_factory=list)
    #: SMPTE start timecode ("01:00:00:00") from the video stream or a tmcd track, None without one
    timecode: str | None = None

    def to_json(self) -> dict:
        """A JSON-serialisable dict (fractions as "num/den" strings, exact)."""
        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "fps": _frac_str(self.fps),
            "fps_float": float(self.fps),
            "time_base": _frac_str(self.time_base),
            "frame_count": self.frame_count,
            "duration_s": self.duration_s,
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "bit_depth": self.bit_depth,
            "is_vfr": self.is_vfr,
            "audio_streams": [vars(a).copy() for a in self.audio_streams],
            "layout": self.layout,
            "projection": self.projection,
            "fov_deg": self.fov_deg,
            "eye_width": self.eye_width,
            "eye_height": self.eye_height,
            "rotation": self.rotation,
            "other_streams": list(self.other_streams),
            "timecode": self.timecode,
        }


def _frac_str(f: Fraction) -> str:
    return f"{f.numerator}/{f.denominator}"


def _bit_depth(pix_fmt: str | None) -> int:
    if not pix_fmt:
        return 8
    try:
        return int(av.VideoFormat(pix_fmt).components[0].bits)
    except Exception:  # unknown/hw formats: assume 8-bit, only used for information
        return 8


#: formats FFmpeg opens as "video" that are not videos: text rendered as ANSI art (tty), single images
_NOT_VIDEO_FORMATS = {"tty", "image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe"}


def _is_still(stream) -> bool:
    """Cover art in an audio file is a video stream with the attached_pic disposition, not a video."""
    try:
        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except Exception:
        return False


def read_stereo_metadata(path: str | Path) -> tuple[str | None, str | None, float | None]:
    """(layout, projection, fov_deg) from the file's spherical metadata; all None when there is none.

    The reader lives in ``vr180matte.io.spherical`` (imported lazily so probing works without it).
    """
    try:
        from vr180matte.io.spherical import read_spherical
    except ImportError:
        log.debug("vr180matte.io.spherical not available; stereo metadata not read")
        return None, None, None
    try:
        meta = read_spherical(path)
    except Exception as exc:  # broken metadata must not stop a job: the layout falls back to the config
        log.warning("could not read spherical metadata of %s: %s", path, exc)
        return None, None, None
    if meta is None:
        return None, None, None
    layout = _STEREO_TO_LAYOUT.get(getattr(meta, "stereo", None) or "", None)
    fov = getattr(meta, "fov_deg", None)
    return layout, getattr(meta, "projection", None), (float(fov) if fov is not None else None)


def eye_size(width: int, height: int, layout: str | None) -> tuple[int, int]:
    """Size of one eye's view. Without metadata the default layout (side-by-side) is assumed."""
    from .layouts import LAYOUTS

    return LAYOUTS.get(layout or "sbs", LAYOUTS["sbs"]).eye_size(width, height)


def _scan_video_packets(container: av.container.InputContainer, stream) -> tuple[np.ndarray, list[int]]:
    """Sorted pts and durations of every real (non-empty, non-discarded) video packet: demux only, no decode."""
    pts: list[int] = []
    durations: list[int] = []
    dts_fallback = 0
    for packet in container.demux(stream):
        if not packet.size or packet.is_discard:
            continue
        p = packet.pts if packet.pts is not None else packet.dts
        if p is None:  # raw streams without timestamps: count in order
            p = dts_fallback
        dts_fallback = p + 1
        pts.append(p)
        durations.append(packet.duration or 0)
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    return np.asarray(pts, dtype=np.int64)[order], [durations[i] for i in order]


def _is_vfr(sorted_pts: np.ndarray, time_base: Fraction) -> bool:
    """Frame durations differ beyond timestamp rounding.

    Rounding tolerated: one tick, or one millisecond (muxers that think in milliseconds, e.g. HandBrake's, store a
    24 fps clip as alternating 42/41 ms frames; that is a constant rate, not a variable one).
    """
    if len(sorted_pts) < 3:
        return False
    diffs = np.diff(sorted_pts)
    spread = int(diffs.max() - diffs.min())
    tolerance = max(1, math.ceil(Fraction(1, 1000) / time_base))
    return spread > tolerance


def _declared_duration(container: av.container.InputContainer, vs) -> float | None:
    """The video track's duration as the container's header declares it (seconds), None when it declares none.

    MP4/MOV: the track duration. Matroska/WebM: the track's DURATION tag (mkvmerge and FFmpeg write it). Else the
    container duration, but only without audio: an audio track may legitimately outlast the video.
    """
    if vs.duration and vs.time_base:
        return float(vs.duration * vs.time_base)
    for key, value in (vs.metadata or {}).items():
        if key.upper() == "DURATION":
            try:
                h, m, s = str(value).strip().split(":")
                return int(h) * 3600 + int(m) * 60 + float(s)
            except ValueError:
                return None
    if container.duration and not container.streams.audio:
        return float(container.duration) / av.time_base
    return None


def _other_streams(container: av.container.InputContainer, vs) -> tuple[list[dict], str | None]:
    """Streams besides the processed video and the audio, and the start timecode if any stream states one."""
    other: list[dict] = []
    timecode = (vs.metadata or {}).get("timecode")
    for s in container.streams:
        if s.index == vs.index or s.type == "audio":
            continue
        if s.type == "video" and _is_still(s):
            kind, codec = "cover art", s.codec_context.name if s.codec_context else None
        else:
            kind = s.type
            codec = s.codec_context.name if s.codec_context is not None else None
        tag = (s.metadata or {}).get("timecode")
        if tag and not timecode:
            timecode = tag
        if kind == "data" and (tag or "timecode" in str((s.metadata or {}).get("handler_name", "")).lower()):
            kind, codec = "timecode", "tmcd"
        other.append({"index": int(s.index), "type": kind, "codec": codec})
    return other, timecode


def streams_report(info: VideoInfo, container_output: bool = True) -> dict:
    """The ``streams`` block of stats.json: what besides video and audio was in the input and what became of it.

    The timecode is carried into MOV/MP4 outputs (a tmcd track); PNG sequences have no place for it.
    """
    keep = container_output and bool(info.timecode)
    carried = [s for s in info.other_streams if s["type"] == "timecode" and keep]
    dropped = [s for s in info.other_streams if s not in carried]
    return {"timecode": info.timecode, "timecode_carried": keep, "carried": carried, "dropped": dropped}


def _check_declared_duration(
    p: Path, container: av.container.InputContainer, vs, frame_pts: np.ndarray, durations: list[int], tb: Fraction
) -> None:
    """Refuse a file whose frames end well before the duration its header declares (a cut-off download/copy).

    MP4 declares a frame count and is checked by it; containers that declare only a duration (Matroska, WebM)
    are checked here: the last frame's end vs the declared duration, with 1.5 frames of slack for rounding.
    """
    declared = _declared_duration(container, vs)
    if not declared or len(frame_pts) == 0:
        return
    step = int(np.median(np.diff(frame_pts))) if len(frame_pts) > 1 else (durations[-1] if durations else 0)
    last_dur = durations[-1] or step
    # MP4 declares the span; Matroska's DURATION tag is the end time (start offset included): take the larger
    end = int(frame_pts[-1]) + last_dur
    present = float(max(end - int(frame_pts[0]), end) * tb)
    slack = max(1.5 * float(step * tb), 0.010)
    if present + slack < declared:
        expected = round(declared / float(step * tb)) if step else None
        count = f" (about {expected} frames)" if expected else ""
        raise InputError(
            f"video {p} is truncated or corrupt: its header declares {declared:.3f}s{count} but its frames end "
            f"after {present:.3f}s ({len(frame_pts)} frames); re-export or re-download it"
        )


def probe(path: str | Path, scan_packets: bool = True) -> VideoInfo:
    """Describe ``path``; raises InputError for a missing file, a non-media file, no video stream or truncation.

    ``scan_packets=False`` skips the demux pass (frame count from the header only, VFR not detected); only for
    quick looks, never for processing.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}; check the path")
    if p.is_dir():
        raise InputError(f"input is a folder, not a video file: {p}; give an .mp4/.mov file")
    try:
        container = av.open(str(p), "r")
    except av.error.FileNotFoundError:
        raise InputError(f"input not found: {p}; check the path") from None
    except av.error.PermissionError:
        raise InputError(f"input not readable (permission denied): {p}; fix its permissions") from None
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(
            f"not a readable video file: {p} (not a media file, or truncated/corrupt: {_short(exc)}); "
            "give an intact .mp4/.mov"
        ) from None
    with container:
        fmt = container.format.name or ""
        if fmt in _NOT_VIDEO_FORMATS or fmt.endswith("_pipe"):
            what = "a text file" if fmt == "tty" else "a still image"
            raise InputError(f"not a video file: {p} (it is {what}); give an .mp4/.mov video")
        videos = [s for s in container.streams.video if not _is_still(s)]
        if not videos:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
            raise InputError(f"not a video file: {p} (no video stream; it has {kinds}); give an .mp4/.mov with video")
        vs = videos[0]
        stream_index = int(vs.index)
        cc = vs.codec_context
        width, height = int(cc.width), int(cc.height)
        if width <= 0 or height <= 0:
            raise InputError(f"video stream of {p} has no frame size (corrupt header); give an intact video file")
        time_base = Fraction(vs.time_base) if vs.time_base else Fraction(1, 90000)
        header_frames = int(vs.frames or 0)
        audio = []
        for s in container.streams.audio:
            acc = s.codec_context
            dur = float(s.duration * s.time_base) if s.duration and s.time_base else None
            audio.append(
                AudioStreamInfo(
                    index=int(s.index),
                    codec=acc.name,
                    sample_rate=int(acc.sample_rate or 0),
                    channels=int(getattr(acc, "channels", 0) or (acc.layout.nb_channels if acc.layout else 0)),
                    duration_s=dur,
                )
            )
        frame_pts = None
        is_vfr = False
        if scan_packets:
            try:
                frame_pts, durations = _scan_video_packets(container, vs)
            except av.error.FFmpegError as exc:
                raise InputError(f"video {p} is truncated or corrupt ({_short(exc)}); re-export or re-download it") from None
            frame_count = len(frame_pts)
            if header_frames and frame_count < header_frames:
                raise InputError(
                    f"video {p} is truncated or corrupt: its header lists {header_frames} frames but only "
                    f"{frame_count} are present; re-export or re-download it"
                )
            is_vfr = _is_vfr(frame_pts, time_base)
            _check_declared_duration(p, container, vs, frame_pts, durations, time_base)
        else:
            frame_count = header_frames
        if frame_count <= 0:
            raise InputError(f"video stream of {p} has no frames; give a video file with frames")
        # duration: first frame start to last frame end (matches the container's stream duration for mp4)
        if frame_pts is not None and len(frame_pts):
            last_dur = durations[-1] or (int(np.median(np.diff(frame_pts))) if len(frame_pts) > 1 else 0)
            ticks = int(frame_pts[-1]) + last_dur - int(frame_pts[0])
            duration_s = float(ticks * time_base)
        elif vs.duration:
            duration_s = float(vs.duration * time_base)
        else:
            duration_s = float(container.duration or 0) / av.time_base
        if vs.average_rate:
            fps = Fraction(vs.average_rate)
        elif duration_s > 0:
            fps = Fraction(frame_count) / Fraction(duration_s).limit_denominator(1_000_000)
        else:
            fps = Fraction(vs.guessed_rate or 30)
        if duration_s <= 0:
            duration_s = float(frame_count / fps)
        pix_fmt = cc.pix_fmt or ""
        codec = cc.name
        color = {k: int(getattr(cc, k) or 0) for k in ("colorspace", "color_primaries", "color_trc", "color_range")}
        rotation = probe_rotation(container, vs, str(p)) if scan_packets else 0
        other, timecode = _other_streams(container, vs)
        width, height = displayed_size(width, height, rotation)
    layout, projection, fov = read_stereo_metadata(p)
    ew, eh = eye_size(width, height, layout)
    info = VideoInfo(
        path=str(p),
        width=width,
        height=height,
        fps=fps,
        time_base=time_base,
        frame_count=frame_count,
        duration_s=duration_s,
        codec=codec,
        pix_fmt=pix_fmt,
        bit_depth=_bit_depth(pix_fmt),
        is_vfr=is_vfr,
        audio_streams=audio,
        layout=layout,
        projection=projection,
        fov_deg=fov,
        eye_width=ew,
        eye_height=eh,
        frame_pts=frame_pts,
        stream_index=stream_index,
        color=color,
        rotation=rotation,
        other_streams=other,
        timecode=timecode,
    )
    log.debug("probed %s: %s", p, info.to_json())
    return info


def _short(exc: BaseException) -> str:
    """One line of an FFmpeg error (its message, without the errno noise)."""
    msg = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(msg).split())[:160]


_LAYOUTS = ("sbs", "sbs_rl", "tb", "mono")
_LAYOUT_WORDS = {"tb": "top-bottom", "mono": "mono (one view)", "sbs": "side-by-side", "sbs_rl": "side-by-side (right first)"}


def resolve_layout(info: VideoInfo, configured: str = "auto") -> str:
    """The stereo layout to process with (``input.layout``), checked against the frame geometry.

    ``auto`` trusts the stereo metadata (side-by-side, right-first or top-bottom; ``probe`` shows the same) and
    defaults to side-by-side without it; metadata that says mono is refused, because vr180matte needs two views.
    """
    if configured not in ("auto", *_LAYOUTS):
        raise InputError(f"unknown input.layout {configured!r}; use auto, sbs, sbs_rl, tb or mono")
    if configured == "auto":
        layout = info.layout or "sbs"
        if layout == "mono":
            raise InputError(
                f"{info.path} says it is {_LAYOUT_WORDS[layout]}, not stereo; vr180matte needs a side-by-side or "
                "top-bottom video (set input.layout=sbs or tb if the metadata is wrong)"
            )
    else:
        layout = configured
        if info.layout is not None and info.layout != layout:
            log.warning("input.layout=%s overrides the file's stereo metadata (%s)", layout, info.layout)
    if layout in ("sbs", "sbs_rl") and info.width % 2:
        raise InputError(
            f"frame width {info.width} of {info.path} is odd, so it cannot be side-by-side stereo; "
            "re-export it at an even width, or set input.layout=tb if it is top-bottom"
        )
    if layout == "tb" and info.height % 2:
        raise InputError(
            f"frame height {info.height} of {info.path} is odd, so it cannot be top-bottom stereo; re-export it at "
            "an even height, or set input.layout=sbs if it is side-by-side"
        )
    return layout
