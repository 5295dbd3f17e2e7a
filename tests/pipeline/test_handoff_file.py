"""The chunk hand-off is data, never code: a planted pickle in the work folder runs nothing on resume."""
import os
import pickle

import numpy as np
import pytest
import torch

from synth import gradient_sbs, write_video
from vr180matte.errors import EXIT_INPUT, HandoffError, exit_code_for
from vr180matte.pipeline import run
from vr180matte.pipeline.chunk_runner import ChunkRunner
from vr180matte.stereo.handoff import ChunkHandoff
from vr180matte.track.view_matter import ViewHandoff

SETS = ["hardware.device=cpu", "matting.engine=passthrough", "processing.chunk_size=4",
        "processing.overlap_frames=1", "output.codec=png"]


class _Evil:
    """Unpickling this calls os.system: what an attacker would plant."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_chunk_handoff_round_trips_as_plain_data(tmp_path):
    h = ChunkHandoff(
        next_id=7,
        left=ViewHandoff(masks={3: torch.rand(8, 10).half()}, boxes={3: np.array([1, 2, 5, 6], np.float32)},
                         scores={3: 0.9}, next_id=7),
        right=ViewHandoff(masks={}, boxes={}, scores={}, next_id=7),
        disparity={3: (4, [(1, 2.5, 0.8), (2, 2.6, 0.9)])}, ref_area={3: 12.0},
        overlap={"left": [torch.zeros(4, 5, dtype=torch.uint8)], "right": [torch.ones(4, 5, dtype=torch.uint8)]},
    )
    path = tmp_path / "handoff.pt"
    h.save(path)
    torch.load(path, weights_only=True)  # loadable as data only
    back = ChunkHandoff.load(path)
    assert back.next_id == 7 and back.left.next_id == 7 and back.right.next_id == 7
    assert torch.equal(back.left.masks[3], h.left.masks[3]) and back.left.scores == {3: 0.9}
    assert back.disparity[3][0] == 4 and back.ref_area == {3: 12.0}
    assert torch.equal(back.overlap["right"][0], h.overlap["right"][0])
    # a resumed chunk may run at another scale (OOM retry): masks and their boxes follow
    back.resized((16, 20))
    assert back.left.masks[3].shape == (16, 20)
    np.testing.assert_allclose(back.left.boxes[3], [2, 4, 10, 12])


def test_planted_pickle_handoff_runs_no_code_and_gives_one_line(tmp_path, monkeypatch):
    clip = write_video(tmp_path / "c.mp4", lambda i: gradient_sbs(i, 64, 32), n=10)
    out = tmp_path / "out"
    real = ChunkRunner.run_chunk

    def stop_in_second_chunk(self, chunk, bar):
        if chunk.index == 1:
            raise KeyboardInterrupt
        return real(self, chunk, bar)

    monkeypatch.setattr(ChunkRunner, "run_chunk", stop_in_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run(clip, out_dir=out, overrides=SETS, quiet=True)
    monkeypatch.setattr(ChunkRunner, "run_chunk", real)
    handoff = out / ".vr180matte" / "c" / "handoff_00000.pt"
    assert handoff.exists()
    marker = tmp_path / "pwned"
    torch.save({"format": 2, "payload": _Evil(marker)}, handoff, pickle_protocol=pickle.DEFAULT_PROTOCOL)

    with pytest.raises(HandoffError) as err:
        run(clip, out_dir=out, overrides=SETS, quiet=True)
    assert not marker.exists(), "the planted file ran code"
    msg = str(err.value)
    assert "\n" not in msg and str(handoff) in msg and "delete the work folder" in msg
    assert exit_code_for(err.value) == EXIT_INPUT
    # after deleting the work folder as told, the run completes
    import shutil

    shutil.rmtree(out / ".vr180matte")
    r = run(clip, out_dir=out, overrides=SETS, quiet=True)
    assert r.stats["frames_out"] == 10
