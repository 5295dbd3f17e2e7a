"""forward.Forward: an owner's attribute reads, calls and sets its part's, and a missing one stays missing."""
import pytest

from vr180matte.forward import Forward


class _Part:
    def __init__(self):
        self.value = 1
        self.inner = type("Inner", (), {"deep": "x"})()

    def double(self, x):
        return 2 * x


class _Owner:
    value = Forward("part.value")
    double = Forward("part.double")
    deep = Forward("part.inner.deep")
    later = Forward("part.later")

    def __init__(self):
        self.part = _Part()


def test_reads_calls_and_sets_land_on_the_part():
    o = _Owner()
    assert o.value == 1 and o.double(3) == 6 and o.deep == "x"
    o.value = 5
    o.deep = "y"
    assert o.part.value == 5 and o.part.inner.deep == "y" and "value" not in vars(o)
    assert isinstance(_Owner.value, Forward)  # on the class: the descriptor itself


def test_a_missing_attribute_raises_so_getattr_defaults_work():
    o = _Owner()
    with pytest.raises(AttributeError):
        o.later
    assert getattr(o, "later", None) is None
    o.later = 3
    assert o.part.later == 3 and o.later == 3
