"""processing.scale_factor "auto" (runtime/scale.py): 0.5 on VR180-sized eyes, more on small ones, numbers as given."""
import pytest

from synth import gradient_sbs, write_video
from vr180matte.config import load_config
from vr180matte.pipeline import run
from vr180matte.pipeline.plan import make_plan, resolved_config
from vr180matte.runtime.scale import AUTO_SCALE, MIN_PROCESSING_EYE, processing_scale


@pytest.mark.parametrize("side, scale", [(3072, 0.5), (1920, 0.5), (1280, 0.5), (1080, 0.6), (960, 0.7),
                                         (720, 0.9), (640, 1.0), (512, 1.0), (128, 1.0)])
def test_auto_keeps_the_processing_eye_at_640_px_or_more(side, scale):
    got = processing_scale("auto", side)
    assert got == pytest.approx(scale)
    assert side * got >= min(side, MIN_PROCESSING_EYE) - 1e-6  # never under 640 px unless the eye is
    assert AUTO_SCALE <= got <= 1.0


def test_a_number_is_used_as_given():
    assert processing_scale(0.25, 512) == 0.25 and processing_scale(1.0, 6144) == 1.0
    assert processing_scale("auto") == AUTO_SCALE  # an engine built outside a run: the 6K value


def test_the_plan_resolves_auto_for_the_engines_and_keeps_it_in_the_digest(tmp_path):
    clip = write_video(tmp_path / "g.mp4", lambda i: gradient_sbs(i, 512, 256), n=2)  # 256 px eyes
    cfg = load_config(None, ["hardware.device=cpu"])
    plan = make_plan(clip, cfg, tmp_path / "o")
    assert plan.geometry.scale == 1.0 and (plan.geometry.proc_w, plan.geometry.proc_h) == (256, 256)
    engine_cfg = resolved_config(cfg, plan)
    assert engine_cfg.processing.scale_factor == 1.0  # the detector's source scale follows the plan
    assert plan.digest == make_plan(clip, cfg, tmp_path / "o").digest  # "auto" is what resume compares
    pinned = load_config(None, ["hardware.device=cpu", "processing.scale_factor=0.25"])
    plan_q = make_plan(clip, pinned, tmp_path / "o")
    assert plan_q.geometry.scale == 0.25 and resolved_config(pinned, plan_q) is pinned
    assert plan_q.digest != plan.digest


def test_a_run_reports_the_scale_it_chose_and_builds_its_engine_with_it(tmp_path):
    clip = write_video(tmp_path / "g.mp4", lambda i: gradient_sbs(i, 512, 256), n=3)
    seen = []

    def factory(cfg, device):
        from vr180matte.engines import build_engine

        seen.append(cfg.processing.scale_factor)
        return build_engine(cfg, device)

    r = run(clip, out_dir=tmp_path / "o", quiet=True, engine=factory,
            overrides=["hardware.device=cpu", "matting.engine=passthrough"])
    assert seen == [1.0] and r.stats["scale_factor"] == 1.0
