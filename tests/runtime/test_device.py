import logging

import pytest
import torch

from vr180matte.runtime import device as dev


def test_cuda_request_falls_back_to_cpu_with_a_warning(caplog):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with caplog.at_level(logging.WARNING):
        assert dev.resolve_device("cuda") == torch.device("cpu")
    assert "no CUDA GPU" in caplog.text
    assert dev.resolve_device("cpu") == torch.device("cpu")


def test_out_of_memory_is_recognised_however_spelled():
    assert dev.is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert dev.is_oom(RuntimeError("CUDA error: out of memory"))
    assert not dev.is_oom(RuntimeError("shape mismatch"))
    assert not dev.is_oom(ValueError("out of memory"))  # only runtime errors come from the allocator


def test_auto_chunk_size_follows_the_vram_budget(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(dev, "vram_budget_gb", lambda d, cap: cap)
    small = dev.auto_chunk_size(3072, 3072, 0.5, cuda, max_vram_gb=2, max_memory_gb=40)
    big = dev.auto_chunk_size(3072, 3072, 0.5, cuda, max_vram_gb=20, max_memory_gb=40)
    full = dev.auto_chunk_size(3072, 3072, 1.0, cuda, max_vram_gb=20, max_memory_gb=40)
    assert 120 <= small < big <= 1800
    assert full < big, "a larger processing scale gets shorter chunks for the same budget"
    cpu = dev.auto_chunk_size(3072, 3072, 0.5, torch.device("cpu"), max_vram_gb=10, max_memory_gb=8)
    assert 120 <= cpu <= 1800


def test_max_vram_auto_from_the_card_and_cpu_fallback(monkeypatch):
    """hardware.max_vram_gb: auto = 90% of the card's memory; a number is taken as given; without a GPU the
    documented fallback (no VRAM budget is used on the CPU)."""
    from types import SimpleNamespace

    assert dev.resolve_max_vram_gb(9.5, torch.device("cuda")) == 9.5
    assert dev.resolve_max_vram_gb("auto", torch.device("cpu")) == dev.CPU_FALLBACK_VRAM_GB
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=10 * 2**30))
    assert dev.resolve_max_vram_gb("auto", torch.device("cuda")) == 9.0
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (4 * 2**30, 10 * 2**30))
    assert dev.vram_budget_gb(torch.device("cuda"), "auto") == 4.0  # less free than the cap: what is free
    assert dev.vram_budget_gb(torch.device("cpu"), "auto") is None


def test_max_vram_config_accepts_auto_and_numbers():
    from vr180matte.config import ConfigError, load_config

    assert load_config().hardware.max_vram_gb == "auto"
    assert load_config(None, ["hardware.max_vram_gb=9.5"]).hardware.max_vram_gb == 9.5
    assert load_config(None, ["hardware.max_vram_gb=10"]).hardware.max_vram_gb == 10.0
    with pytest.raises(ConfigError):
        load_config(None, ["hardware.max_vram_gb=0.1"])
    with pytest.raises(ConfigError):
        load_config(None, ["hardware.max_vram_gb=lots"])
