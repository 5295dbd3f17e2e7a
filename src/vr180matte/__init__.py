"""vr180matte: automatic, stereo-consistent people matting for VR180 side-by-side video."""

__version__ = "0.1.0"
