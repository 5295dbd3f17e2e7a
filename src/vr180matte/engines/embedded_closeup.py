"""Close-ups in the embedded segmenter: the bundled selfie-segmentation model fused near a person's pose mask.

Why: for people whose hips are below the frame (close-ups, talking heads) pose segmentation is weak: it misses
shoulders and leaks into the background there, and the selfie model is made for this framing. It is a second
mediapipe model with its own lifetime (made on the first close-up, freed with the segmenter), so it has its own
owner here rather than more state in :class:`vr180matte.engines.embedded_segmenter.EmbeddedSegmenter`.
"""
from __future__ import annotations

import logging

import numpy as np

from ..boxes import mask_box

# the segmenter's logger, as before this step had a module of its own (log filters and records name it)
log = logging.getLogger("vr180matte.engines.embedded_segmenter")


class SelfieFusion:
    """The selfie-segmentation model, made on first use, and how its mask is fused into one person's."""

    def __init__(self) -> None:
        self.model = None  # mp.solutions.selfie_segmentation instance, made on the first close-up

    def fuse(self, rgb: np.ndarray, pose: np.ndarray, view: str) -> np.ndarray:
        """Close-up: pose segmentation misses shoulders and leaks into the background there; the selfie model is
        made for this framing. It is not instance-aware, so it only counts near this person's pose mask."""
        import cv2

        box = mask_box(pose)
        if box is None:
            return pose
        h, w = rgb.shape[:2]
        bw, bh = box[2] - box[0], box[3] - box[1]
        grow = 0.2
        x0, y0 = int(max(0, box[0] - grow * bw)), int(max(0, box[1] - grow * bh))
        x1, y1 = int(min(w, box[2] + grow * bw)), int(min(h, box[3] + grow * bh))
        if self.model is None:
            import mediapipe as mp

            self.model = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1)
            log.info("%s: close-up person: fusing the bundled selfie-segmentation model", view)
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        selfie = np.asarray(self.model.process(crop).segmentation_mask, dtype=np.float32)
        px = max(3, int(0.15 * max(bw, bh)))
        near = cv2.dilate((pose[y0:y1, x0:x1] > 0.5).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1)))
        out = np.zeros_like(pose)
        out[y0:y1, x0:x1] = selfie * near
        return out

    def close(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None
