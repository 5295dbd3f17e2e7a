"""The output codecs, as data: one row per codec, read by the config, the writer, the finalizer and the pipeline.

A codec is a row of this table, not an if-chain repeated across modules: its file suffix, container, encoder,
pixel format, whether it carries alpha, which output formats it serves and the hardware encoder to prefer where
one exists. A new codec is one new row (plus, if it needs them, encoder options in ``options``).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Codec:
    name: str  # the config's ``output.codec`` value
    suffix: str  # file suffix of a segment / the output ("" = a folder of images)
    container: str | None  # FFmpeg muxer name (None = no container: an image sequence)
    encoder: str  # FFmpeg encoder (CPU)
    pix_fmt: str  # encoder pixel format for 8-bit sources
    alpha: bool  # the stream carries an alpha plane
    formats: tuple[str, ...]  # output.format values it can serve
    pix_fmt_10bit: str | None = None  # encoder pixel format for >8-bit sources (None = same as pix_fmt)
    hardware_encoder: str | None = None  # NVENC encoder to prefer on CUDA machines where PyAV has it
    options: dict = field(default_factory=dict)  # fixed encoder options (CRF/preset are added by the writer)
    codec_tag: str | None = None  # container tag (hvc1 so Apple players open HEVC)
    intra: bool = False  # every frame coded on its own: consecutive frames may go to parallel encoder contexts

    @property
    def is_sequence(self) -> bool:
        return self.container is None


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("prores4444", ".mov", "mov", "prores_ks", "yuva444p10le", True, ("alpha",), "yuva444p10le",
              options={"profile": "4444", "vendor": "apl0", "alpha_bits": "16"}, intra=True),
        Codec("png", "", None, "png", "rgba", True, ("alpha",), "rgba64be", intra=True),
        # B-frames off: see writer.py (stream-copy joins of VFR segments need DTS == PTS)
        Codec("h264", ".mp4", "mp4", "libx264", "yuv420p", False, ("greenscreen",), "yuv420p10le",
              hardware_encoder="h264_nvenc", options={"bf": "0"}),
        Codec("hevc", ".mp4", "mp4", "libx265", "yuv420p", False, ("greenscreen", "passthrough"), "yuv420p10le",
              hardware_encoder="hevc_nvenc", options={"x265-params": "log-level=error:bframes=0"}, codec_tag="hvc1"),
    )
}

#: output.codec: auto -> the codec each output format gets
DEFAULT_CODEC = {"alpha": "prores4444", "greenscreen": "h264", "passthrough": "hevc"}
FORMATS = tuple(DEFAULT_CODEC)

#: container suffix -> FFmpeg muxer (for joins and audio side files)
MUXERS = {".mov": "mov", ".mp4": "mp4", ".m4a": "mp4", ".mka": "matroska", ".mkv": "matroska"}


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown output codec {name!r}; use one of {', '.join(CODECS)}") from None


def resolve_codec(fmt: str, codec: str) -> Codec:
    """The codec for ``output.format`` / ``output.codec`` (``auto`` resolved); ValueError says what fits."""
    name = DEFAULT_CODEC[fmt] if codec == "auto" else codec
    c = get_codec(name)
    if fmt not in c.formats:
        fits = ", ".join(n for n, k in CODECS.items() if fmt in k.formats)
        raise ValueError(f"output.codec={name} cannot be used for output.format={fmt}: use {fits}")
    return c


def muxer_for(suffix: str) -> str:
    return MUXERS.get(suffix.lower(), "mov")
