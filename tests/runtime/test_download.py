"""runtime/download.py: what a frame step posts comes down in one read, each part gets its own values, in order."""
import torch

from vr180matte.runtime.download import FrameDownload
from vr180matte.runtime.host_reads import HostReadCounter


def test_posted_values_come_down_in_one_read_in_the_order_posted():
    d = FrameDownload()
    got = []
    d.post(torch.tensor([[1, 2], [3, 4]]), lambda v: got.append(("a", v)))
    d.post(torch.tensor([0.5]), lambda v: got.append(("b", v)))
    d.post(torch.zeros(0), lambda v: got.append(("c", v)))
    with HostReadCounter() as c:
        assert got == [] and len(d) == 3  # nothing read until the flush
        d.flush()
    assert c.total("reads") == 1
    assert got == [("a", [1.0, 2.0, 3.0, 4.0]), ("b", [0.5]), ("c", [])]
    with HostReadCounter() as c:
        d.flush()  # nothing posted: no read
    assert c.total("reads") == 0 and len(d) == 0
