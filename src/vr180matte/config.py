"""Configuration: defaults from ``cfg/default.yaml``, a user YAML/TOML file, ``--set`` overrides.

Every key must exist in the defaults; an unknown key is rejected with the closest valid one.
Types come from the default value; ranges and choices from ``RULES`` below.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


from .errors import ConfigError  # noqa: E402,F401 - defined with its exit code in vr180matte.errors


class _Registry:
    """The choices of a key, read from the registry that owns them (imported when first needed, so the config
    never repeats a list a module owns, and ``--help`` does not import torch)."""

    def __init__(self, where: str, extra: tuple = ()) -> None:
        self.where, self.extra = where, tuple(extra)

    def _names(self) -> list:
        import importlib

        module, attr = self.where.split(":")
        return [*self.extra, *importlib.import_module(module).__dict__[attr]]

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, value) -> bool:
        return value in self._names()


# Choices and numeric ranges. Keys not listed only need the default's type.
RULES: dict[str, dict[str, Any]] = {
    "input.layout": {"choices": _Registry("vr180matte.io.layouts:LAYOUTS", ("auto",))},
    "input.squeezed": {"choices": ["auto", True, False]},
    "processing.scale_factor": {"range": (0.05, 1.0), "also": ["auto"], "type": float},
    "processing.chunk_size": {"range": (0, 10_000_000), "also": ["auto"]},
    "processing.overlap_frames": {"range": (0, 10_000)},
    "processing.max_memory_gb": {"range": (0.5, 4096)},
    "processing.read_ahead": {"range": (1, 256)},
    "processing.stage_queue": {"range": (1, 64)},
    "processing.vfr_policy": {"choices": ["keep_timestamps", "cfr"]},
    "processing.parallel_eyes": {"choices": ["auto", True, False]},
    # Accepted for the specification's sake, with only the value the product implements; any other is refused
    # with the reason rather than silently ignored.
    "processing.streaming_output": {"fixed": (True, "frames are always encoded as they are produced, in chunks "
                                                    "(bounded memory); there is no buffer-everything mode")},
    "cluster.gpus_per_task": {"range": (0.0, 64.0)},
    "cluster.cpus_per_task": {"range": (0.0, 1024.0)},
    "cluster.max_retries": {"range": (0, 1000)},
    "detection.confidence_threshold": {"range": (0.0, 1.0)},
    "detection.model": {"choices": ["yolov8n", "yolov8s", "yolov8m"]},
    "detection.detect_interval": {"range": (1, 100_000)},
    "detection.equirect_crops": {"choices": ["auto", True, False]},
    "detection.min_box_area": {"range": (0.0, 1.0)},
    "detection.max_persons": {"range": (1, 256)},
    "detection.image_size": {"range": (64, 16384)},
    "detection.upscale": {"range": (1.0, 4.0)},
    "detection.tile_size": {"range": (160, 4096)},
    "matting.engine": {"choices": _Registry("vr180matte.engines:ENGINES", ("auto",))},
    "matting.sam2_model": {
        "choices": ["sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large"]
    },
    "matting.max_conditioning_frames": {"range": (1, 64)},
    "matting.memory_window": {"range": (1, 64)},
    "matting.track_iou_threshold": {"range": (0.0, 1.0)},
    "matting.track_max_missed": {"range": (0, 100_000)},
    "matting.track_drift_iou": {"range": (0.0, 1.0)},
    "matting.track_min_mask_area": {"range": (0.0, 1.0)},
    "matting.track_confirm_end_runs": {"range": (0, 1000)},
    "matting.mobilesam_box_margin": {"range": (0.0, 2.0)},
    "refine.method": {"choices": _Registry("vr180matte.matte.refine:METHODS")},
    "refine.radius_px": {"range": (1, 256)},
    "refine.eps": {"range": (1e-8, 1.0)},
    "refine.erode_px": {"range": (-64, 64)},
    "refine.feather_px": {"range": (0, 128)},
    "refine.temporal_strength": {"range": (0.0, 1.0)},
    "performance.quality_every": {"range": (1, 100_000)},
    "output.format": {"choices": _Registry("vr180matte.io.codecs:FORMATS")},
    "output.fisheye_fov": {"choices": [180, 190]},
    "refine.decontaminate": {"choices": ["auto", True, False]},
    "output.codec": {"choices": _Registry("vr180matte.io.codecs:CODECS", ("auto",))},
    "output.crf": {"range": (0, 51)},
    "output.background_color": {"rgb": True},
    "output.write_vr180_metadata": {"choices": ["auto", "always", "never"]},
    "hardware.max_vram_gb": {"range": (0.5, 1024), "also": ["auto"], "type": float},
    "matting.memory_offload": {"choices": ["auto", True, False]},
    "hardware.policy": {"choices": _Registry("vr180matte.runtime.policy:POLICIES")},
    "hardware.device": {"pattern": r"cpu|cuda(:\d+)?", "hint": "cpu, cuda or cuda:N (N = GPU index)"},
    "audio.audio_codec": {"choices": ["copy"]},
    "stereo.consistency_mode": {"choices": _Registry("vr180matte.stereo.modes:MODES")},
    "stereo.validation_threshold": {"range": (0.0, 1.0)},
    "stereo.correction_method": {"choices": _Registry("vr180matte.stereo.consistency:METHODS")},
    "stereo.disparity_smoothing": {"range": (0.0, 1.0)},
    "stereo.max_disparity_frac": {"range": (0.0, 0.5)},
    "stereo.vouch_ratio": {"range": (0.0, 1.0)},
    "matting.roi_max_frac": {"range": (0.0, 1.0)},
    "matting.roi_max_lanes": {"range": (1, 64)},
}


def _load_defaults() -> dict:
    text = resources.files("vr180matte").joinpath("cfg/default.yaml").read_text()
    return yaml.safe_load(text)


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _closest(key: str, valid: Iterable[str]) -> str | None:
    """The valid key ``key`` is probably a misspelling of, or None when nothing is close (no random guesses)."""
    valid = list(valid)
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.75)
    if match:
        return match[0]
    # compare by the last component, which is what people usually misspell (or put in the wrong section)
    leaf = key.rsplit(".", 1)[-1]
    leaf_matches = difflib.get_close_matches(leaf, [v.rsplit(".", 1)[-1] for v in valid], n=1, cutoff=0.75)
    if leaf_matches:
        candidates = [v for v in valid if v.endswith("." + leaf_matches[0]) or v == leaf_matches[0]]
        return difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)[0]
    return None


def _did_you_mean(key: str, valid: Iterable[str]) -> str:
    near = _closest(key, valid)
    return f"did you mean '{near}'?" if near else "see docs/configuration.md for the valid keys"


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    rule = RULES.get(name, {})
    where = f"{name}={value!r} ({source})"
    if "fixed" in rule:
        want, why = rule["fixed"]
        if isinstance(value, str) and isinstance(want, bool) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if value != want or type(value) is not type(want):
            raise ConfigError(f"invalid value {where}: only {want!r} is supported: {why}")
        return value
    if "choices" in rule:
        # YAML reads yes/no/true as bool; accept "true"/"false" strings for tri-state keys too.
        if isinstance(value, str) and value.lower() in ("true", "false") and True in rule["choices"]:
            value = value.lower() == "true"
        if value not in rule["choices"] or (isinstance(value, bool) and True not in rule["choices"]):
            options = ", ".join(str(c) for c in rule["choices"])
            hint = ""
            if isinstance(value, str):
                near = difflib.get_close_matches(value, [str(c) for c in rule["choices"]], n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(f"invalid value {where}: choose one of {options}{hint}")
        return value
    if rule.get("rgb"):
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
        ):
            raise ConfigError(f"invalid value {where}: give three integers 0-255, e.g. [0, 255, 0]")
        return [int(c) for c in value]
    if value in rule.get("also", []):
        return value
    if "type" in rule:  # a key whose default is a word ("auto") but whose other values are numbers
        default = rule["type"]()
    if "pattern" in rule:
        if not isinstance(value, str) or not re.fullmatch(rule["pattern"], value):
            raise ConfigError(f"invalid value {where}: use {rule['hint']}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"invalid value {where}: expected true or false")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            extra = f" or {', '.join(map(str, rule['also']))}" if "also" in rule else ""
            raise ConfigError(f"invalid value {where}: expected an integer{extra}")
        value = int(value)
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"invalid value {where}: expected a number")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"invalid value {where}: expected a string")
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"invalid value {where}: expected a list")
    if "range" in rule:
        lo, hi = rule["range"]
        if not lo <= value <= hi:
            raise ConfigError(f"invalid value {where}: must be between {lo} and {hi}")
    return value


@dataclass(frozen=True)
class Section:
    """Read-only attribute view of one config section."""

    _values: Mapping[str, Any]

    def __getattr__(self, item: str) -> Any:
        try:
            return self._values[item]
        except KeyError:
            raise AttributeError(item) from None


class Config:
    """A validated configuration. ``cfg.section.key`` or ``cfg["section.key"]``."""

    def __init__(self, flat: Mapping[str, Any]):
        self._flat = dict(flat)

    def __getitem__(self, name: str) -> Any:
        return self._flat[name]

    def __getattr__(self, section: str) -> Section:
        prefix = section + "."
        values = {k[len(prefix):]: v for k, v in self._flat.items() if k.startswith(prefix)}
        if not values:
            raise AttributeError(section)
        return Section(values)

    def to_dict(self) -> dict:
        tree: dict = {}
        for name, value in self._flat.items():
            section, key = name.split(".", 1)
            tree.setdefault(section, {})[key] = copy.deepcopy(value)
        return tree

    def replace(self, **overrides: Any) -> "Config":
        """A copy with ``section__key=value`` overrides, validated."""
        sets = [f"{k.replace('__', '.', 1)}={json.dumps(v)}" for k, v in overrides.items()]
        return load_config(None, sets, base=self._flat)

    def digest(self, exclude: Iterable[str] = ()) -> str:
        """Hash of the values that change the produced frames (used to validate resume)."""
        skip = set(exclude)
        data = {k: v for k, v in sorted(self._flat.items()) if k not in skip}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""


def _construct_unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(
                f"duplicate key '{key}' at line {mark.line + 1}, column {mark.column + 1} "
                f"(first at line {seen[key] + 1}): keep one"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``<problem> at line L, column C`` (1-based) from a PyYAML error."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).strip().splitlines()[0]
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def _read_file(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"config path {path} is a folder: give a .yaml or .toml file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file (binary data): give a .yaml or .toml file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)  # its messages already say "(at line L, column C)"; duplicates refused
        else:
            data = yaml.load(text, Loader=_StrictLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except tomllib.TOMLDecodeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"cannot parse config file {path}: {first}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse config file {path}: {_yaml_problem(exc)}") from None
    except ConfigError as exc:  # a duplicate key
        raise ConfigError(f"config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain sections (a mapping), not {type(data).__name__}")
    return data


def _parse_set(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"invalid override '{item}': use section.key=value, e.g. processing.scale_factor=0.25")
    name, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return name.strip(), value


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults <- file at ``path`` <- ``overrides`` (``section.key=value`` strings)."""
    defaults = _flatten(_load_defaults())
    flat = dict(base) if base is not None else dict(defaults)
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        data = _read_file(Path(path))
        for section, body in data.items():
            if not isinstance(body, Mapping):
                known = sorted({k.split(".")[0] for k in defaults})
                if section not in known:
                    raise ConfigError(f"unknown config section '{section}' in {path}: {_did_you_mean(section, known)}")
                raise ConfigError(f"config section '{section}' in {path} must be a mapping of keys")
        layers.append((str(path), _flatten(data)))
    layers.append(("--set", dict(_parse_set(s) for s in overrides)))
    for source, values in layers:
        for name, value in values.items():
            if name not in defaults:
                raise ConfigError(f"unknown config key '{name}' ({source}): {_did_you_mean(name, defaults)}")
            flat[name] = _coerce(name, value, defaults[name], source)
    return Config(flat)


def default_config() -> Config:
    return load_config()
