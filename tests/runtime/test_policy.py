"""The device policy: one place for every device-dependent choice (runtime/policy.py)."""
import pytest
import torch

from vr180matte.config import ConfigError, load_config
from vr180matte.runtime.policy import POLICIES, choose_policy


def test_cpu_device_gets_the_cpu_policy_with_tiles_and_state_on_the_host():
    p = choose_policy(torch.device("cpu"), cores=2)
    assert p.kind == "cpu" and not p.whole_frame and not p.sam2_state_on_device
    assert p.cores == 2 and p.encoders == 1 and p.torch_threads == 2
    assert "device is cpu" in p.reason


def test_forced_gpu_policy_runs_gpu_shapes_on_the_cpu_device():
    p = choose_policy(torch.device("cpu"), force="gpu", cores=16)
    assert p.kind == "gpu" and p.device.type == "cpu"
    assert p.whole_frame and p.sam2_state_on_device
    # 16 cores: a quarter to the decoder, one to the stage threads, the rest encode (at most 8 contexts)
    assert p.encoders == 8 and p.codec_threads == 4
    assert "forced" in p.reason and p.as_dict()["device"] == "cpu"


@pytest.mark.parametrize("cores,encoders", [(1, 1), (2, 1), (4, 2), (8, 5), (64, 8)])
def test_gpu_policy_encoder_count_follows_the_cores_left(cores, encoders):
    assert choose_policy(torch.device("cpu"), force="gpu", cores=cores).encoders == encoders


def test_unknown_policy_is_refused_by_the_config_and_the_chooser():
    assert POLICIES == ("auto", "gpu", "cpu")
    with pytest.raises(ConfigError):
        load_config(overrides=["hardware.policy=gpus"])
    with pytest.raises(ValueError):
        choose_policy(torch.device("cpu"), force="tpu")


def test_thread_pools_follow_the_gpu_policy_for_the_run_and_are_restored():
    import cv2

    from vr180matte.runtime.policy import thread_pools

    before = torch.get_num_threads(), cv2.getNumThreads()
    gpu = choose_policy(torch.device("cpu"), force="gpu", cores=4)  # a quarter of the cores: 1 thread
    assert gpu.pool_threads and gpu.torch_threads == 1
    with thread_pools(gpu):
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before
    cpu = choose_policy(torch.device("cpu"), cores=2)
    assert not cpu.pool_threads and not cpu.stage_streams
    with thread_pools(cpu):  # the CPU policy keeps the libraries' own sizing
        assert (torch.get_num_threads(), cv2.getNumThreads()) == before
