import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("YOLO_OFFLINE", "1")
torch.manual_seed(0)


@pytest.fixture(params=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def device(request) -> torch.device:
    """Every device the machine has: CPU always, CUDA when present."""
    return torch.device(request.param)


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d
