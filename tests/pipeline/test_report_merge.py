"""pipeline/report_merge.py: chunk reports merged by meaning (means weighted by frames, counters summed)."""
from vr180matte.pipeline.report_merge import merge_reports


def chunk(frames, agree, amin, corr, pmax, pmean, disp, q_frames, edge):
    return {
        "stereo": {"mode": "master_slave", "validation_threshold": 0.8, "frames": frames, "agreement_mean": agree,
                   "agreement_min": amin, "corrections": corr, "persons_left": {"max": pmax, "mean": pmean},
                   "disparity_px": disp, "correction_log": [{"frame": frames}], "correction_log_truncated": False},
        "quality": {"frames": q_frames, "edge_consistency": edge, "sampling": {"every": 5, "eye_frames_analysed": 2}},
        "tracks": {"left": {"tracks_started": 1, "reprompts": 2}},
        "kpi": {"event": "sam_predict_output", "predicts": 10, "mean_latency_ms": 4.0},
    }


def test_means_are_weighted_counters_summed_and_ids_global():
    a = chunk(30, 0.9, 0.7, 2, 1, 1.0, {"1": 8.0}, 6, 0.8)
    b = chunk(10, 0.5, 0.6, 1, 3, 2.0, {"1": 4.0, "2": 6.0}, 2, 0.4)
    b["kpi"]["predicts"], b["kpi"]["mean_latency_ms"] = 30, 8.0
    m = merge_reports([a, b], id_maps=[{1: 1}, {1: 1, 2: 5}])
    st = m["stereo"]
    assert st["mode"] == "master_slave" and st["validation_threshold"] == 0.8
    assert st["frames"] == 40 and st["agreement_mean"] == 0.8  # (30*0.9 + 10*0.5) / 40
    assert st["agreement_min"] == 0.6 and st["corrections"] == 3
    assert st["persons_left"] == {"max": 3, "mean": 1.25}
    assert st["disparity_px"] == {"1": 6.0, "5": 6.0}  # chunk 1's local id 2 is the run's person 5
    assert len(st["correction_log"]) == 2 and st["correction_log_truncated"] is True  # 3 corrections, 2 logged
    assert m["quality"]["frames"] == 8 and m["quality"]["edge_consistency"] == 0.7  # (6*0.8 + 2*0.4) / 8
    assert m["quality"]["sampling"] == {"every": 5, "eye_frames_analysed": 4}
    assert m["tracks"]["left"] == {"tracks_started": 2, "reprompts": 4}
    assert m["kpi"]["predicts"] == 40 and m["kpi"]["mean_latency_ms"] == 7.0  # (10*4 + 30*8) / 40
    assert m["kpi"]["event"] == "sam_predict_output"


def test_nothing_to_merge():
    assert merge_reports([{}, {}]) == {}
