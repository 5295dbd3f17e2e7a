import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def clip():
    """The standard two-person synthetic stereo clip (12 frames, 256 px eyes), rendered once."""
    from stereo_synth import two_people

    return two_people(12)
