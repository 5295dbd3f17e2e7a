"""Equirectangular geometry and perspective-crop detection at the stretched parts of a 180-degree eye."""
import math

import numpy as np
import pytest
import torch

from stereo_synth import make_clip, Person
from vr180matte.engines.base import Detection
from vr180matte.stereo.consistency import mask_iou
from vr180matte.stereo.equirect import (EquirectDetector, box_iou, crop_box_to_equirect, crop_mask_to_equirect,
                                        merge_detections, perspective_crop)


def _marker_eye(size, lon, lat):
    eye = torch.zeros(size, size, 3, dtype=torch.uint8)
    u = int((lon / 180 + 0.5) * size)
    v = int((0.5 - lat / 180) * size)
    eye[v - 1:v + 2, u - 1:u + 2] = 255
    return eye


@pytest.mark.parametrize("yaw,pitch", [(0, 0), (50, 0), (-45, -50), (40, 60)])
def test_perspective_crop_centre_looks_at_yaw_pitch(yaw, pitch):
    crop = perspective_crop(_marker_eye(360, yaw, pitch), yaw, pitch, 60, 65)
    ys, xs = torch.nonzero(crop[..., 0] > 60, as_tuple=True)
    assert len(ys) > 0
    assert abs(xs.float().mean() - 32) <= 1.5 and abs(ys.float().mean() - 32) <= 1.5


def test_perspective_crop_up_is_up():
    """A point above the crop centre (higher latitude) appears above the crop's centre row."""
    crop = perspective_crop(_marker_eye(360, 30, 20), 30, 0, 90, 64)
    ys, _ = torch.nonzero(crop[..., 0] > 60, as_tuple=True)
    assert ys.float().mean() < 32 - 5


def test_crop_box_to_equirect_contains_the_object_and_undoes_the_crop():
    """A person rendered at (-45, -50): its box found in the crop maps back onto its equirect box."""
    clip = make_clip([Person("davis2016_dance-twirl", yaw=lambda t: -45, pitch=lambda t: -50, height_deg=50,
                             disparity=lambda t: 5.0)], frames=1, size=256)
    eye = torch.from_numpy(clip.left[0])
    size, fov = 128, 75.0
    crop = perspective_crop(eye, -45, -50, fov, size)
    # The person's ground-truth mask seen through the same crop gives its box in crop pixels.
    gt = torch.from_numpy(clip.gt_left[0, 0])[..., None].repeat(1, 1, 3).mul(255).to(torch.uint8)
    gcrop = perspective_crop(gt, -45, -50, fov, size)[..., 0] > 127
    ys, xs = torch.nonzero(gcrop, as_tuple=True)
    cbox = np.float32([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    ebox = crop_box_to_equirect(cbox, -45, -50, fov, size, 256, 256)
    truth = clip.boxes_left[0][0]
    # The mapped box encloses the person (the crop box's straight edges bulge outward in equirect, so it is
    # loose: IoU ~0.6 here); the warped-back mask is what gives the tight box.
    assert all(ebox[:2] <= truth[:2] + 1.5) and all(ebox[2:] >= truth[2:] - 1.5)
    assert box_iou(ebox, truth)[0, 0] > 0.5
    back = crop_mask_to_equirect(gcrop.float(), ebox, -45, -50, fov, 256, 256)
    gtm = torch.from_numpy(clip.gt_left[0, 0]) > 0.5
    assert mask_iou(back, gtm.float()) > 0.85
    ys, xs = torch.nonzero(back > 0.5, as_tuple=True)
    assert box_iou(np.float32([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]), truth)[0, 0] > 0.9
    assert crop.shape == (size, size, 3)


def test_merge_detections_drops_duplicates_keeps_distinct():
    a = Detection(np.float32([10, 10, 50, 90]), 0.9)
    b = Detection(np.float32([12, 12, 48, 80]), 0.95)  # same person, contained
    c = Detection(np.float32([100, 10, 140, 90]), 0.5)
    kept = merge_detections([a, b, c])
    assert [d.score for d in kept] == [0.95, 0.5]


def test_equirect_detector_recovers_a_stretched_person_the_plain_detector_only_half_finds():
    """Real detector (mediapipe BlazePose, the embedded engine's). A person at yaw 60, pitch -60 is stretched
    sideways 2x in the equirect eye. Measured (docs/stereo.md): the plain detector still fires but its box covers
    about half of the person (IoU ~0.5); the perspective crop sees an undistorted person and its warped-back
    mask gives the whole extent (IoU ~0.77)."""
    pytest.importorskip("mediapipe")
    from vr180matte.engines.embedded_detector import EmbeddedDetector

    torch.set_num_threads(1)
    clip = make_clip([Person("davis2016_parkour", yaw=lambda t: 60, pitch=lambda t: -60, height_deg=45,
                             disparity=lambda t: 6.0)], frames=1, size=256)
    eye = torch.from_numpy(clip.left[0])
    truth = clip.boxes_left[0][0]
    ref = make_clip([Person("davis2016_parkour", yaw=lambda t: 0, pitch=lambda t: 0, height_deg=45,
                            disparity=lambda t: 6.0)], frames=1, size=256).boxes_left[0][0]
    aspect = lambda b: (b[2] - b[0]) / (b[3] - b[1])  # noqa: E731
    assert aspect(truth) > 1.5 * aspect(ref)  # visibly stretched compared with the same person on the horizon
    det = EmbeddedDetector(confidence_threshold=0.5)
    plain = det.detect(eye)
    wrapped = EquirectDetector(det)  # the default crops
    found = wrapped.detect(eye)
    best = lambda ds: max([float(box_iou(d.box, truth)[0, 0]) for d in ds], default=0.0)  # noqa: E731
    assert best(found) > best(plain) + 0.15, (best(plain), best(found))
    assert best(found) > 0.7
    assert wrapped.stats["crop_replaced"] + wrapped.stats["crop_only"] >= 1


def test_equirect_detector_one_batched_pass_with_yolo_equals_image_by_image():
    """With the real bundled YOLOv8s (which has detect_many) the eye and all its crops go through one batched pass;
    the detections equal calling the detector image by image; the crop grids are built once per run, not per
    frame."""
    from vr180matte.engines.yolo import YoloDetector
    from vr180matte.runtime.models import bundled_detector_path
    from vr180matte.stereo import equirect

    torch.set_num_threads(2)
    clip = make_clip([Person("davis2016_parkour", yaw=lambda t: 0, pitch=lambda t: 0, height_deg=50,
                             disparity=lambda t: 6.0),
                      Person("davis2016_parkour", yaw=lambda t: 60, pitch=lambda t: -55, height_deg=45,
                             disparity=lambda t: 6.0)], frames=2, size=320)
    yolo = YoloDetector(bundled_detector_path(), "yolov8s", confidence_threshold=0.3, person_classes=(0, 1),
                        image_size=640, upscale=1.0, source_scale=1.0, batch=8)
    calls = []
    real_many = yolo.detect_many
    yolo.detect_many = lambda images, *a: calls.append(len(images)) or real_many(images, *a)
    batched = EquirectDetector(yolo)
    equirect._crop_grid.cache_clear()
    eye0, eye1 = (torch.from_numpy(clip.left[t]) for t in range(2))
    got = [batched.detect(eye0), batched.detect(eye1)]
    n_crops = len(batched.crops)
    assert calls == [1 + n_crops, 1 + n_crops]  # the eye and its crops together, once a frame
    info = equirect._crop_grid.cache_info()
    assert info.misses == n_crops and info.hits == n_crops  # grids built on the first frame, reused on the second

    class OneByOne:  # the same detector without detect_many: the per-image path
        confidence_threshold, supports_threshold = yolo.confidence_threshold, True

        def detect(self, image, threshold=None):
            return real_many([image], threshold)[0]

    ref = EquirectDetector(OneByOne())
    want = [ref.detect(eye0), ref.detect(eye1)]
    assert sum(len(g) for g in got) >= 2
    for g, w in zip(got, want):
        assert len(g) == len(w)
        for a, b in zip(g, w):
            assert np.abs(a.box - b.box).max() < 0.05 and abs(a.score - b.score) < 1e-3


def test_all_crops_of_an_eye_in_one_pass_equal_one_crop_at_a_time():
    """perspective_crops: the eye made float once and every crop from one grid_sample; each crop equals its own
    grid_sample over the eye (the per-crop form) exactly."""
    import torch.nn.functional as F

    from vr180matte.stereo.equirect import DEFAULT_CROPS, _crop_grid, perspective_crops

    eye = torch.randint(0, 256, (180, 180, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    crops = perspective_crops(eye, DEFAULT_CROPS, 75.0, 64)
    assert crops.shape == (len(DEFAULT_CROPS), 64, 64, 3) and crops.dtype == torch.uint8
    for (yaw, pitch), got in zip(DEFAULT_CROPS, crops):
        g = _crop_grid(180, 180, yaw, pitch, 75.0, 64, 180.0, "cpu")
        one = F.grid_sample(eye.permute(2, 0, 1)[None].float(), g, mode="bilinear", padding_mode="zeros",
                            align_corners=False)[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)
        assert torch.equal(got, one)
        assert torch.equal(got, perspective_crop(eye, yaw, pitch, 75.0, 64))
