"""Finalize an output: join segments by stream copy, copy the source's audio bit-exact, VR180 metadata, verification.

Why stream copy: each chunk was encoded once into its segment (the resume checkpoint); joining re-encodes nothing.
Why interleave by hand: writing all video and then all audio would make the muxer buffer the whole video in memory
(it holds packets until every stream has advanced), so packets of the segments and of the source's audio are merged
by their timestamp here and handed to the muxer in order, keeping memory flat in video length.
Why a temporary name: a crashed or failed join must never leave a file at ``output`` that looks finished.
"""
from __future__ import annotations

import hashlib
import heapq
import logging
import os
import re
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av

from vr180matte.io.errors import InputError, OutputError, disk_full, is_disk_full
from vr180matte.io.writer import mov_options

log = logging.getLogger(__name__)

_PNG_NAME = re.compile(r"^\d{6,}\.png$")
#: audio codecs the MP4 (.m4a) muxer takes; anything else goes to Matroska (.mka)
_M4A_CODECS = {"aac", "alac", "mp3", "ac3", "eac3", "opus", "flac"}

SOURCE = "source"


def temp_path(output: Path) -> Path:
    """The temporary name ``output`` is written under (same folder, hidden, same suffix so the format is known)."""
    return output.with_name(f".{output.stem}.partial{output.suffix}")


def _container_format(path: Path) -> str:
    from .codecs import muxer_for

    return muxer_for(path.suffix)


# -- joining --------------------------------------------------------------------------------------------------------
def join_segments(
    segments: list[Path],
    output: Path,
    source: Path | None,
    copy_audio: bool,
    time_base: Fraction,
    spherical: dict | str | None = SOURCE,
) -> None:
    """Join encoded segments (in order) into ``output`` by stream copy, with the source's audio copied bit-exact.

    ``spherical``: ``"source"`` copies the source's VR180 metadata when it has some; a dict
    ``{"stereo": ..., "projection": ..., "fov_deg": ...}`` writes that; None writes none. Not applied to PNG folders.
    """
    segments = [Path(s) for s in segments]
    output = Path(output)
    if not segments:
        raise OutputError(f"no segments to join into {output}")
    for s in segments:
        if not s.exists():
            raise OutputError(f"segment {s} is missing; re-run to encode it again")
    if source is not None and Path(source).resolve() == output.resolve():
        raise OutputError(f"output {output} is the input file; choose another output path")
    if not output.parent.exists():
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {output.parent}: {exc.strerror}") from None
    if not os.access(output.parent, os.W_OK):
        raise OutputError(f"output folder {output.parent} is not writable; choose another output path")
    try:
        if all(s.is_dir() for s in segments):
            _join_png(segments, output, Path(source) if source else None, copy_audio)
            return
        if any(s.is_dir() for s in segments):
            raise OutputError("cannot join a mix of PNG folders and video segments")
        tmp = temp_path(output)
        try:
            _join_av(segments, tmp, Path(source) if source else None, copy_audio, Fraction(time_base))
            meta = _spherical_for(spherical, source)
            if meta is not None:
                _write_spherical(tmp, meta, in_place=True)  # tmp is renamed to the output afterwards
            os.replace(tmp, output)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except Exception as exc:
        if is_disk_full(exc):  # its own message: where, what is free, what the join needs
            raise disk_full(output.parent, join_size_needed(segments, source if copy_audio else None)) from None
        raise
    log.info("joined %d segment(s) into %s", len(segments), output)


def join_size_needed(segments: list[Path], source: Path | None) -> int:
    """Bytes the joined output needs: the segments (stream copy) plus the source's audio, estimated from its
    bit rate (the segments stay until the join has succeeded, so this is on top of them)."""
    total = 0
    for s in segments:
        try:
            total += sum(f.stat().st_size for f in s.iterdir()) if s.is_dir() else s.stat().st_size
        except OSError:
            pass
    if source is not None:
        try:
            with av.open(str(source), "r") as c:
                for a in c.streams.audio:
                    rate = a.bit_rate or a.codec_context.bit_rate or 0
                    secs = float(a.duration * a.time_base) if a.duration and a.time_base else 0.0
                    total += int(rate * secs / 8)
        except (av.error.FFmpegError, OSError):
            pass
    return int(total * 1.01) + (64 << 10)  # container overhead


def _video_packets(segments: list[Path], out_stream, time_base: Fraction) -> Iterator[tuple[Fraction, int, av.Packet]]:
    """Video packets of every segment in order, rescaled to ``time_base``, DTS kept strictly increasing.

    Segments carry the source timestamps, so they already follow each other; a segment whose timestamps restart
    (written without source pts) is shifted to continue after the previous one.
    """
    last_dts: int | None = None
    last_end: int = 0
    for seg in segments:
        with av.open(str(seg), "r") as c:
            if not c.streams.video:
                raise OutputError(f"segment {seg} has no video stream; delete it and re-run")
            vs = c.streams.video[0]
            stb = Fraction(vs.time_base)
            offset: int | None = None
            for pkt in c.demux(vs):
                if not pkt.size:
                    continue
                pts = _rescale(pkt.pts, stb, time_base)
                dts = _rescale(pkt.dts if pkt.dts is not None else pkt.pts, stb, time_base)
                dur = _rescale(pkt.duration or 0, stb, time_base)
                if offset is None:
                    offset = 0
                    if last_dts is not None and dts <= last_dts:
                        offset = last_end - dts
                        log.warning("segment %s restarts its timestamps; shifted by %d ticks", seg, offset)
                pts, dts = pts + offset, dts + offset
                if last_dts is not None and dts <= last_dts:
                    raise OutputError(f"segment {seg} has non-increasing timestamps ({dts} after {last_dts})")
                last_dts = dts
                last_end = max(last_end, pts + dur)
                pkt.pts, pkt.dts, pkt.duration = pts, dts, dur
                pkt.time_base = time_base
                pkt.stream = out_stream
                yield (Fraction(dts) * time_base, 0, pkt)


def _audio_packets(source: Path, stream_map: dict) -> Iterator[tuple[Fraction, int, av.Packet]]:
    """The source's audio packets, untouched (bytes and timestamps), with their output stream set."""
    with av.open(str(source), "r") as c:
        streams = [s for s in c.streams.audio if s.index in stream_map]
        for pkt in c.demux(streams):
            if not pkt.size:
                continue
            t = pkt.dts if pkt.dts is not None else pkt.pts
            key = Fraction(t or 0) * Fraction(pkt.time_base)
            pkt.stream = stream_map[pkt.stream_index]
            yield (key, 1, pkt)


def _source_timecode(source: Path) -> str | None:
    """The source's start timecode (from its video stream or a tmcd track); warns about streams not carried."""
    try:
        from vr180matte.io.probe import _other_streams

        with av.open(str(source), "r") as c:
            videos = [s for s in c.streams.video]
            if not videos:
                return None
            other, timecode = _other_streams(c, videos[0])
    except (av.error.FFmpegError, OSError):
        return None
    dropped = [f"{s['type']} ({s['codec'] or 'unknown'})" for s in other if s["type"] != "timecode"]
    if dropped:
        log.warning("%s: %s not carried to the output (only video, audio and timecode are); see stats.json streams",
                    source.name, ", ".join(dropped))
    return timecode


def _rescale(value: int | None, src: Fraction, dst: Fraction) -> int:
    if value is None:
        return 0
    if src == dst:
        return int(value)
    return int(round(Fraction(value) * src / dst))


def _join_av(segments: list[Path], tmp: Path, source: Path | None, copy_audio: bool, time_base: Fraction) -> None:
    fmt = _container_format(tmp)
    options = mov_options(time_base)
    try:
        out = av.open(str(tmp), "w", format=fmt, options=options)
    except (OSError, av.error.FFmpegError) as exc:
        raise OutputError(f"cannot write {tmp}: {exc}; choose a writable output folder") from None
    src_container = None
    try:
        with av.open(str(segments[0]), "r") as first:
            template = first.streams.video[0]
            vout = out.add_stream_from_template(template)
            # The template does not carry the container tag, and without one the mov muxer tags ProRes 4444 as
            # 'apch' (ProRes HQ, no alpha, which is what an editor then believes) and HEVC as 'hev1' (which Apple
            # players refuse): keep the segment's own tag (ap4h, hvc1).
            if template.codec_tag:
                vout.codec_tag = template.codec_tag
            vout.time_base = time_base
            extradata = template.codec_context.extradata
            rate = template.average_rate or template.guessed_rate
        timecode = _source_timecode(source) if source is not None else None
        if timecode:  # the mov/mp4 muxer writes a tmcd track from it: the source's timecode is carried
            vout.metadata["timecode"] = timecode
            if rate:  # the muxer counts timecode frames at this rate, which a template does not copy
                vout.codec_context.framerate = rate
        for seg in segments[1:]:  # a stream copy needs one decoder configuration for every segment
            with av.open(str(seg), "r") as c:
                if c.streams.video[0].codec_context.extradata != extradata:
                    raise OutputError(f"segment {seg} was encoded with different settings than {segments[0]}; "
                                      "delete the segments and re-run")
        stream_map = {}
        if copy_audio and source is not None:
            try:
                src_container = av.open(str(source), "r")
            except av.error.FFmpegError as exc:
                raise InputError(f"cannot read audio of {source}: {exc}") from None
            for s in src_container.streams.audio:
                stream_map[s.index] = out.add_stream_from_template(s)
        iters = [_video_packets(segments, vout, time_base)]
        if stream_map:
            iters.append(_audio_packets(source, stream_map))
        try:
            for _, _, pkt in heapq.merge(*iters, key=lambda item: (item[0], item[1])):
                out.mux(pkt)
        except av.error.FFmpegError as exc:
            hint = "; try a .mov output" if fmt == "mp4" else ""
            raise OutputError(f"joining into {tmp.name} failed: {exc}{hint}") from None
    finally:
        if src_container is not None:
            src_container.close()
        out.close()


# -- PNG folders -----------------------------------------------------------------------------------------------------
def audio_sidecar_path(output: Path, source: Path) -> Path | None:
    """Where a PNG output's audio goes: ``<output>.audio.m4a`` (or ``.mka`` for codecs MP4 does not carry)."""
    with av.open(str(source), "r") as c:
        codecs = {s.codec_context.name for s in c.streams.audio}
    if not codecs:
        return None
    ext = ".m4a" if codecs <= _M4A_CODECS else ".mka"
    return output.parent / f"{output.name}.audio{ext}"


def _join_png(segments: list[Path], output: Path, source: Path | None, copy_audio: bool) -> None:
    """Put every segment's PNG files into the folder ``output`` (hard links, so the segments stay intact for a
    resumed run until the pipeline removes them), plus the audio as a stream-copied sidecar file."""
    if output.exists() and (not output.is_dir() or any(not _PNG_NAME.match(p.name) for p in output.iterdir())):
        raise OutputError(f"output {output} exists and is not a PNG sequence folder of ours; choose another path")
    tmp = output.with_name(f".{output.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    sidecar_tmp: Path | None = None
    try:
        seen: set[str] = set()
        for seg in segments:
            for f in sorted(seg.iterdir()):
                if not _PNG_NAME.match(f.name):
                    continue
                if f.name in seen:
                    raise OutputError(f"frame {f.name} appears in two segments; delete the segments and re-run")
                seen.add(f.name)
                try:
                    os.link(f, tmp / f.name)
                except OSError:
                    shutil.copy2(f, tmp / f.name)
        sidecar = None
        if copy_audio and source is not None:
            sidecar = audio_sidecar_path(output, source)
            if sidecar is not None:
                sidecar_tmp = temp_path(sidecar)
                _copy_audio_only(source, sidecar_tmp)
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
        if sidecar_tmp is not None:
            os.replace(sidecar_tmp, sidecar)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if sidecar_tmp is not None:
            sidecar_tmp.unlink(missing_ok=True)
        raise
    log.info("PNG sequence of %d frames in %s", len(seen), output)


def _copy_audio_only(source: Path, dest: Path) -> None:
    with av.open(str(source), "r") as src, av.open(str(dest), "w", format=_container_format(dest)) as out:
        smap = {s.index: out.add_stream_from_template(s) for s in src.streams.audio}
        for pkt in src.demux(list(src.streams.audio)):
            if not pkt.size:
                continue
            pkt.stream = smap[pkt.stream_index]
            out.mux(pkt)


# -- VR180 metadata ----------------------------------------------------------------------------------------------------
def _spherical_for(spherical: dict | str | None, source: Path | None) -> dict | None:
    if spherical is None:
        return None
    if isinstance(spherical, dict):
        return spherical
    if spherical != SOURCE:
        raise ValueError(f"spherical must be 'source', a dict or None, not {spherical!r}")
    if source is None:
        return None
    try:
        from vr180matte.io.spherical import read_spherical
    except ImportError:
        log.warning("vr180matte.io.spherical missing: VR180 metadata not copied")
        return None
    meta = read_spherical(source)
    if meta is None:
        return None
    return {"stereo": meta.stereo, "projection": meta.projection, "fov_deg": meta.fov_deg}


def _write_spherical(path: Path, meta: dict, in_place: bool = False) -> None:
    """Inject st3d/sv3d in place; a projection the writer cannot express keeps the stereo box only (warned)."""
    from vr180matte.io.spherical import write_spherical

    kwargs = {k: v for k, v in meta.items() if k in ("stereo", "projection", "fov_deg") and v is not None}
    if kwargs.get("stereo") == "right-left":
        log.warning("right-left stereo metadata cannot be written; labelled left-right (write the left eye first)")
        kwargs["stereo"] = "left-right"
    if kwargs.get("projection") not in (None, "equirectangular", "fisheye"):  # fisheye: a mesh (mshp)
        log.warning("projection %s cannot be written; only the stereo layout is kept in %s", kwargs["projection"], path)
        kwargs["projection"] = None
        kwargs.pop("fov_deg", None)
    elif "projection" not in kwargs:
        kwargs["projection"] = None
    try:
        write_spherical(path, **kwargs, in_place=in_place)
    except (ValueError, OSError) as exc:
        raise OutputError(f"cannot write VR180 metadata into {path.name}: {exc}") from None


def write_vr180_metadata(path: Path, stereo: str = "left-right", projection: str = "equirectangular",
                         fov_deg: float = 180.0) -> None:
    """Add VR180 metadata to a finished .mp4/.mov (for inputs that lacked it, when the user asks)."""
    _write_spherical(Path(path), {"stereo": stereo, "projection": projection, "fov_deg": fov_deg})


# -- verification ------------------------------------------------------------------------------------------------------
def verify_output(path: Path, expected_frames: int, expected_duration_s: float, tolerance_s: float | None = None) -> dict:
    """Count the output's frames (demux) and measure its video duration against the input's.

    ``tolerance_s`` defaults to one frame duration (plus 1 ms). A PNG folder counts its files; its duration is the
    file count times the input's mean frame duration (PNG has no timing), and its audio is the sidecar's.
    """
    path = Path(path)
    frame_dur = expected_duration_s / expected_frames if expected_frames else 0.0
    tol = tolerance_s if tolerance_s is not None else frame_dur + 0.001
    if path.is_dir():
        frames = sum(1 for p in path.iterdir() if _PNG_NAME.match(p.name))
        duration = frames * frame_dur
        audio = 0
        for ext in (".m4a", ".mka"):
            side = path.parent / f"{path.name}.audio{ext}"
            if side.exists():
                with av.open(str(side)) as c:
                    audio = len(c.streams.audio)
    else:
        from vr180matte.io.probe import probe

        try:
            info = probe(path)
        except InputError as exc:
            raise OutputError(f"output {path} does not read back: {exc}") from None
        frames, duration, audio = info.frame_count, info.duration_s, len(info.audio_streams)
    result = {
        "frames": frames,
        "duration_s": duration,
        "frames_ok": frames == expected_frames,
        "duration_ok": abs(duration - expected_duration_s) <= tol,
        "audio_streams": audio,
    }
    if not (result["frames_ok"] and result["duration_ok"]):
        log.warning("output %s does not match the input: %s (expected %d frames, %.3f s)", path, result,
                    expected_frames, expected_duration_s)
    return result


def audio_packets_digest(path: Path) -> list[str]:
    """sha256 over each audio stream's packet bytes, in stream order: equal lists mean bit-identical audio."""
    path = Path(path)
    with av.open(str(path)) as c:
        hashes = {s.index: hashlib.sha256() for s in c.streams.audio}
        if hashes:
            for pkt in c.demux(list(c.streams.audio)):
                if pkt.size:
                    hashes[pkt.stream_index].update(bytes(pkt))
        return [hashes[i].hexdigest() for i in sorted(hashes)]


def output_spherical(info, mode: str = "auto", maintain_sbs: bool = True) -> dict | None:
    """The VR180 metadata an output should carry (``output.write_vr180_metadata``), as ``join_segments(spherical=)``.

    ``auto``: the input's metadata when it has some, else VR180 (left-right, 180-degree equirectangular) when the
    input is VR180-shaped (side-by-side with square eyes, e.g. 6144x3072), else none. ``always``: VR180 (keeping the
    input's projection/field of view when it has them). ``never``: none. Separate per-eye files
    (``maintain_sbs=False``) are mono views of the same projection.
    """
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"write_vr180_metadata must be auto, always or never, not {mode!r}")
    if mode == "never":
        return None
    stereo_of = {"sbs": "left-right", "sbs_rl": "left-right", "tb": "top-bottom", "mono": "mono"}
    has_meta = info.layout is not None or info.projection is not None
    square_eyes = info.height > 0 and info.width == 2 * info.height
    if mode == "auto" and not has_meta and not square_eyes:
        return None
    stereo = stereo_of.get(info.layout or "sbs", "left-right")
    projection = info.projection or "equirectangular"
    fov = info.fov_deg if info.fov_deg is not None else (180.0 if projection == "equirectangular" else None)
    meta = {"stereo": stereo if maintain_sbs else "mono", "projection": projection}
    if fov is not None:
        meta["fov_deg"] = fov
    return meta
