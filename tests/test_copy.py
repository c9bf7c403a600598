"""copy.copy, copy.deepcopy and pickle of Values and Modules, on both backends."""

from __future__ import annotations

import copy
import pickle

import pytest
from scalargrad.nn import MLP


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_value_copies_are_detached_leaves(V, how):
    a = V(2.0, label="a")
    b = (a * 3.0).tanh()
    b.backward()
    dup = {
        "copy": copy.copy,
        "deepcopy": copy.deepcopy,
        "pickle": lambda v: pickle.loads(pickle.dumps(v)),
    }[how]
    for v in (a, b):
        c = dup(v)
        assert type(c) is V and c is not v
        assert (c.data, c.grad, c.label) == (v.data, v.grad, v.label)
        assert c._op == "" and tuple(c._prev) == ()
        c.data = 100.0
        assert v.data != 100.0  # independent


def test_module_deepcopy_and_pickle_are_independent(name_backend):
    m = MLP(2, [3, 1], seed=0, backend=name_backend)
    for dup in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert dup.state_dict() == m.state_dict()
        assert dup.backend is m.backend and repr(dup) == repr(m)
        assert float(dup([0.5, -1.0])) == float(m([0.5, -1.0]))
        for p in dup.parameters():
            p.data += 1.0
        assert dup.state_dict() != m.state_dict()
    shallow = copy.copy(m)
    assert shallow.parameters()[0] is m.parameters()[0]


def test_tape_is_not_picklable(backend):
    t = backend.Tape(backend.Value(1.0) * 2.0)
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(t)


@pytest.fixture
def name_backend(backend):
    return backend.Value._backend


def test_rust_handles_stay_out_of_the_cyclic_collector():
    import gc

    from scalargrad import _core

    a = _core.Value(1.0)
    made = [a, a * 2.0, 3.0 - a, a.relu(), _core.sum([a, 1.0]), copy.copy(a), a.clamp(0, 1)]
    made += list(made[1]._prev) + _core.layer([[a]], [_core.Value(0.0)], [2.0], "tanh")
    assert not any(gc.is_tracked(v) for v in made)
    del made
    fresh = [_core.Value(float(i)) for i in range(5000)]  # past the handle free list
    assert not any(gc.is_tracked(v) for v in fresh)
