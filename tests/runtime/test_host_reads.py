"""HostReadCounter: every kind of host read of a tensor value is counted, under the label in force; ops too;
literal .cpu()/.to("cpu") are counted apart as downloads; nothing is counted outside the context."""
import numpy as np
import torch

from vr180matte.runtime.host_reads import READS, HostReadCounter


def test_every_read_kind_is_counted_under_its_label():
    x = torch.arange(6, dtype=torch.float32)
    with HostReadCounter() as c:
        with c.labelled("a"):
            bool(x[0] > 0)
            int(x[1])
            float(x[2])
            x[3].item()
            x.tolist()
            x.numpy()
            np.asarray(x)
            [1, 2, 3][x[1].long()]
        with c.labelled("b"):
            if x.any():
                pass
            y = torch.where(x > 2, 0.0, x)  # device work, no read
            x.cpu()
            x.to("cpu")
    assert c.reads == {"a": 8, "b": 1}
    assert set(c.read_kinds) == READS
    assert c.downloads["b"] == 2 and c.downloads["a"] == 0
    assert c.ops["b"] >= 3 and c.total("ops") > c.ops["b"]
    assert y.shape == x.shape
    bool(x[0] > 0)  # outside: not counted
    assert c.total("reads") == 9
    # where each read was asked: these are in a test, outside the product package
    assert c.read_sites == {"a|outside the package": 8, "b|outside the package": 1}


def test_nothing_counted_for_pure_device_work():
    x = torch.rand(4, 8, 8)
    with HostReadCounter() as c:
        torch.nn.functional.avg_pool2d(x[None], 3, stride=1, padding=1).clamp(0, 1).sum()
    assert c.total("reads") == 0 and c.total("ops") >= 3
