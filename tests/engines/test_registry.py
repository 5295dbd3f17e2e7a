"""matting.engine=auto: det-sam2 when its weights are present, else the embedded engine, and it says why."""
from vr180matte.config import load_config
from vr180matte.engines import choose_engine


def test_auto_picks_embedded_without_weights(tmp_path):
    name, why = choose_engine(load_config(None, [f"models.dir={tmp_path}"]))
    assert name == "embedded" and "no SAM2/YOLO weights" in why


def test_auto_picks_det_sam2_when_its_weights_are_present(tmp_path):
    for f in ("yolov8n.pt", "sam2.1_hiera_tiny.pt"):
        (tmp_path / f).write_bytes(b"weights")
    name, why = choose_engine(load_config(None, [f"models.dir={tmp_path}"]))
    assert name == "det-sam2" and "found" in why and "yolov8n.pt" in why


def test_auto_picks_det_sam2_with_the_bundled_detector(tmp_path):
    """No yolov8*.pt: the bundled YOLOv8s stands in, so the SAM2.1 checkpoint alone selects det-sam2."""
    (tmp_path / "sam2.1_hiera_tiny.pt").write_bytes(b"weights")
    name, why = choose_engine(load_config(None, [f"models.dir={tmp_path}"]))
    assert name == "det-sam2" and "bundled" in why


def test_explicit_engine_is_kept(tmp_path):
    assert choose_engine(load_config(None, ["matting.engine=mobilesam"]))[0] == "mobilesam"
