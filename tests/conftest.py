import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("YOLO_OFFLINE", "1")
torch.manual_seed(0)


@pytest.fixture(autouse=True)
def sealed_models(tmp_path_factory, monkeypatch) -> Path:
    """Every test sees an empty weights folder, never the machine's (``~/.cache/vr180matte/models`` or an
    inherited ``$VR180MATTE_MODELS``): with engine ``auto`` a machine holding a SAM2 checkpoint would otherwise
    run another engine than CI. ``models.dir`` defaults to "" (so this variable decides); a test that provides
    weights sets ``models.dir`` or ``$VR180MATTE_MODELS`` itself. Subprocesses (the CLI, benchmarks) inherit it."""
    folder = tmp_path_factory.mktemp("models-sealed")
    monkeypatch.setenv("VR180MATTE_MODELS", str(folder))
    return folder


@pytest.fixture(params=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def device(request) -> torch.device:
    """Every device the machine has: CPU always, CUDA when present."""
    return torch.device(request.param)


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d
