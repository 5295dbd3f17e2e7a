from pathlib import Path

import pytest
import yaml

from vr180matte.config import ConfigError, load_config
from vr180matte.runtime.scale import processing_scale

REPO = Path(__file__).resolve().parents[1]
SPEC_KEYS = {
    "input": ["video_path"],
    "processing": ["scale_factor", "chunk_size", "overlap_frames", "memory_pipeline", "streaming_output",
                   "parallel_eyes", "max_memory_gb"],
    "detection": ["confidence_threshold", "model"],
    "matting": ["use_disparity_mapping", "memory_offload", "fp16"],
    "output": ["path", "format", "background_color", "maintain_sbs"],
    "hardware": ["device", "max_vram_gb"],
    "audio": ["preserve_audio", "verify_sync", "audio_codec"],
    "stereo": ["consistency_mode", "validation_threshold", "correction_method"],
    "performance": ["profile_enabled", "preserve_intermediates"],
    "debugging": ["log_intermediate_workflow", "save_detection_visualization", "frame_count_validation"],
}


def test_every_specification_key_exists_with_its_default():
    cfg = load_config()
    for section, keys in SPEC_KEYS.items():
        for key in keys:
            cfg[f"{section}.{key}"]  # raises KeyError if missing
    # "auto": the specification's 0.5 for every VR180 eye of 1280 px and more (runtime/scale.py)
    assert cfg.processing.scale_factor == "auto"
    assert processing_scale(cfg.processing.scale_factor, 3072) == processing_scale(cfg.processing.scale_factor, 1280) == 0.5
    assert cfg.output.background_color == [0, 255, 0]
    assert cfg.stereo.consistency_mode == "master_slave"


def test_the_full_specification_example_loads_from_yaml_and_toml(tmp_path):
    spec = {
        "input": {"video_path": "in.mp4"},
        "processing": {"scale_factor": 0.5, "chunk_size": 900, "overlap_frames": 60, "memory_pipeline": False,
                       "streaming_output": True, "parallel_eyes": False, "max_memory_gb": 40},
        "detection": {"confidence_threshold": 0.7, "model": "yolov8n"},
        "matting": {"use_disparity_mapping": True, "memory_offload": True, "fp16": True},
        "output": {"path": "out/", "format": "alpha", "background_color": [0, 255, 0], "maintain_sbs": True},
        "hardware": {"device": "cuda", "max_vram_gb": 10},
        "audio": {"preserve_audio": True, "verify_sync": True, "audio_codec": "copy"},
        "stereo": {"consistency_mode": "master_slave", "validation_threshold": 0.8, "correction_method": "transfer"},
        "performance": {"profile_enabled": True, "preserve_intermediates": False},
        "debugging": {"log_intermediate_workflow": True, "save_detection_visualization": False,
                      "frame_count_validation": True},
    }
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump(spec))
    assert load_config(y).input.video_path == "in.mp4"
    toml = tmp_path / "c.toml"
    toml.write_text('[processing]\nscale_factor = 0.25\nchunk_size = 0\n[output]\nformat = "greenscreen"\n')
    cfg = load_config(toml)
    assert cfg.processing.scale_factor == 0.25 and cfg.processing.chunk_size == 0
    assert cfg.output.format == "greenscreen"


PRESET_VALUES = {  # a few values per preset, spelled out: the file's own numbers, not re-read from it
    "rtx3080": {"processing.scale_factor": 0.5, "processing.chunk_size": 600, "hardware.max_vram_gb": 9.5,
                "matting.sam2_model": "sam2.1_hiera_tiny", "hardware.device": "cuda", "detection.model": "yolov8n"},
    "a40": {"processing.scale_factor": 1.0, "processing.chunk_size": 900, "detection.image_size": 3072,
            "matting.sam2_model": "sam2.1_hiera_base_plus", "hardware.max_vram_gb": 44,
            "processing.parallel_eyes": True},
    "h100": {"processing.chunk_size": "auto", "matting.sam2_model": "sam2.1_hiera_large", "hardware.max_vram_gb": 72,
             "detection.model": "yolov8m", "processing.max_memory_gb": 128},
    "example": {"processing.scale_factor": 0.25, "processing.chunk_size": 300, "output.format": "greenscreen",
                "stereo.consistency_mode": "joint"},
}


def _file_values(path: Path) -> dict:
    import tomllib

    import yaml

    tree = tomllib.loads(path.read_text()) if path.suffix == ".toml" else yaml.safe_load(path.read_text())
    flat = {}
    for section, keys in tree.items():
        for key, value in keys.items():
            flat[f"{section}.{key}"] = value
    return flat


@pytest.mark.parametrize("preset", ["rtx3080", "a40", "h100", "example"])
def test_presets_are_valid_and_their_values_are_loaded(preset):
    path = next((REPO / "configs").glob(f"{preset}.*"))
    cfg = load_config(path)
    for key, want in PRESET_VALUES[preset].items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == want, (preset, key)
    # every key the file sets reaches the config with the file's value (none dropped, renamed or defaulted)
    for key, want in _file_values(path).items():
        section, name = key.split(".")
        got = getattr(getattr(cfg, section), name)
        assert (list(got) if isinstance(got, tuple) else got) == want, (preset, key, got, want)
    assert preset != "example" or list(cfg.output.background_color) == [0, 177, 64]


def test_set_overrides_are_type_checked():
    cfg = load_config(None, ["processing.scale_factor=0.25", "output.maintain_sbs=false", "processing.chunk_size=auto"])
    assert cfg.processing.scale_factor == 0.25 and cfg.output.maintain_sbs is False
    assert cfg.processing.chunk_size == "auto"
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(None, ["processing.scale_factor=big"])
    with pytest.raises(ConfigError, match="between 0.05 and 1.0"):
        load_config(None, ["processing.scale_factor=2"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(None, ["processing.chunk_size=1.5"])
    with pytest.raises(ConfigError, match="three integers"):
        load_config(None, ["output.background_color=[0,300,0]"])


def test_unknown_key_names_the_closest_valid_key(tmp_path):
    with pytest.raises(ConfigError, match=r"did you mean 'processing\.scale_factor'"):
        load_config(None, ["processing.scale_facter=0.5"])
    f = tmp_path / "typo.yaml"
    f.write_text("stereo:\n  consistancy_mode: joint\n")
    with pytest.raises(ConfigError, match=r"did you mean 'stereo\.consistency_mode'"):
        load_config(f)
    f.write_text("sterio:\n  consistency_mode: joint\n")
    with pytest.raises(ConfigError, match="stereo"):
        load_config(f)


def test_enum_values_suggest_the_closest_choice():
    with pytest.raises(ConfigError, match="did you mean 'master_slave'"):
        load_config(None, ["stereo.consistency_mode=master-slave"])
    with pytest.raises(ConfigError, match="yolov8n"):
        load_config(None, ["detection.model=yolov9"])


def test_error_is_one_line_and_bad_files_are_reported(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "missing.yaml")
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("processing: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)


def test_digest_ignores_excluded_keys():
    a = load_config(None, ["output.path=a/"])
    b = load_config(None, ["output.path=b/"])
    assert a.digest() != b.digest()
    assert a.digest(exclude=["output.path"]) == b.digest(exclude=["output.path"])


# ------------------------------------------------------------------ hostile config files (issue 15)


def test_a_binary_config_file_is_a_config_error(tmp_path):
    f = tmp_path / "weights.yaml"
    f.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ConfigError, match="not a text file") as e:
        load_config(f)
    assert "\n" not in str(e.value)


def test_a_folder_given_as_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_yaml_syntax_errors_say_line_and_column(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("processing:\n  scale_factor: 0.5\n  chunk_size: [1, 2\noutput:\n  crf: 18\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+") as e:
        load_config(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)


def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("output:\n  crf: 18\n  format: alpha\n  crf: 30\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'crf' at line 4, column 3 \(first at line 2\)"):
        load_config(f)
    f.write_text("output:\n  crf: 18\noutput:\n  format: alpha\n")
    with pytest.raises(ConfigError, match="duplicate key 'output'"):
        load_config(f)


def test_did_you_mean_only_when_something_is_close():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["foo.bar=1"])
    assert "did you mean" not in str(e.value) and "docs/configuration.md" in str(e.value)
    with pytest.raises(ConfigError, match=r"did you mean 'output\.crf'"):
        load_config(None, ["output.crff=1"])


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu", ""])
def test_unknown_devices_are_refused(device):
    with pytest.raises(ConfigError, match="cpu, cuda or cuda:N"):
        load_config(None, [f"hardware.device={device}"])


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1"])
def test_valid_devices_are_accepted(device):
    assert load_config(None, [f"hardware.device={device}"]).hardware.device == device
