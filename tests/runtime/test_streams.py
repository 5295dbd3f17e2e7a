"""runtime/streams.py: a CUDA stream per stage thread and events at the hand-offs; the identity elsewhere."""
from dataclasses import dataclass, field

import pytest
import torch

from vr180matte.pipeline.overlap import run_stages
from vr180matte.runtime.policy import choose_policy
from vr180matte.runtime.profile import StageTimer
from vr180matte.runtime.streams import StageStreams, tensors_in


@dataclass
class _Item:
    frame: torch.Tensor
    eyes: dict = field(default_factory=dict)
    rest: list = field(default_factory=list)


def test_every_tensor_of_an_item_is_found_once_through_dicts_lists_and_dataclasses():
    a, b, c = torch.zeros(2), torch.ones(3), torch.arange(4)
    item = _Item(a, {"left": b, "right": b}, [(c, "x"), {"n": 1}, _Item(a)])
    found = list(tensors_in({"item": item, "again": [item]}))
    assert sorted(id(t) for t in found) == sorted(id(t) for t in (a, b, c))


def test_off_the_gpu_streams_are_the_identity_and_the_stages_run_as_before(device):
    """CPU (or the CPU policy): nothing is created and items pass unwrapped; on CUDA, the same results as one
    thread on one stream."""
    policy = choose_policy(device)
    streams = StageStreams(device, policy.stage_streams)
    assert streams.enabled == (device.type == "cuda")
    if not streams.enabled:
        x = _Item(torch.zeros(1))
        assert streams.send(x) is x and streams.receive(x) is x
    frames = [torch.full((64, 64), float(i), device=device) for i in range(12)]
    out, serial = [], []
    stages = [("up", lambda t: t * 2), ("math", lambda t: (t + 1).sqrt()), ("down", lambda t: t.sum().item())]
    run_stages(iter(frames), stages[:2] + [("down", lambda t: out.append(t.sum().item()))], timer=StageTimer(),
               streams=streams)
    run_stages(iter(frames), stages[:2] + [("down", lambda t: serial.append(t.sum().item()))],
               timer=StageTimer(), threaded=False)
    assert out == serial and len(out) == 12


def test_a_forced_gpu_policy_on_the_cpu_makes_no_streams():
    p = choose_policy(torch.device("cpu"), force="gpu", cores=16)
    assert not p.stage_streams and not StageStreams("cpu", True).enabled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_each_stage_thread_has_its_own_stream_and_no_host_sync():
    streams = StageStreams("cuda", True)
    seen: dict[str, set] = {"a": set(), "b": set()}

    def a(t):
        seen["a"].add(torch.cuda.current_stream().cuda_stream)
        return torch.matmul(t, t)

    def b(t):
        seen["b"].add(torch.cuda.current_stream().cuda_stream)
        return t.sum()

    sums = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_stages((torch.eye(256, device="cuda") * i for i in range(8)),
                   [("a", a), ("b", b), ("keep", sums.append)], timer=StageTimer(), streams=streams)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    default = torch.cuda.default_stream().cuda_stream
    assert len(seen["a"]) == len(seen["b"]) == 1 and seen["a"] != seen["b"] and default not in seen["a"] | seen["b"]
    assert [float(s) for s in sums] == [256.0 * i * i for i in range(8)]
