"""Model files from hostile or interrupted writers: ``scalargrad.io`` (``nn.save``,
``nn.load``, ``Module.save``, ``Module.load``) on both backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import scalargrad
import scalargrad.io
from scalargrad.nn import MLP, Layer, Neuron, load


@pytest.fixture(params=scalargrad.BACKENDS)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def _forge(path: Path, architecture: object, parameters: dict) -> Path:
    """A file any reader's checksum accepts, with whatever architecture we like."""
    body = {
        "format": scalargrad.io.FORMAT,
        "format_version": scalargrad.io.FORMAT_VERSION,
        "library_version": scalargrad.__version__,
        "architecture": architecture,
        "parameters": parameters,
    }
    body["checksum"] = scalargrad.io._checksum(body)
    path.write_text(json.dumps(body))
    return path


HUGE = {"type": "MLP", "nin": 10**6, "layers": [[10**6, "relu"], [1, "linear"]]}


def test_forged_huge_architecture_is_refused_before_anything_is_built(name, tmp_path):
    """The forged file of a few hundred bytes declaring 10**12 weights: refused
    with a ValueError in a child whose address space is capped 200 MB above what
    it uses after import, so building even a fraction of the model would fail."""
    params = {f"layers.0.neurons.0.w.{i}": float.hex(0.5) for i in range(3)}
    path = _forge(tmp_path / "forged.json", HUGE, params)
    assert os.path.getsize(path) < 1000
    child = textwrap.dedent(
        f"""
        import resource, sys
        import scalargrad, scalargrad.nn
        vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + 200 * 2**20, vm + 200 * 2**20))
        resource.setrlimit(resource.RLIMIT_CPU, (20, 20))
        try:
            scalargrad.nn.load({str(path)!r}, backend={name!r})
        except ValueError as e:
            print("ValueError:", e)
        """
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ValueError:" in out.stdout
    assert "needs 1,000,002,000,001 parameters but the file holds 3" in out.stdout


@pytest.mark.parametrize(
    "arch, match",
    [
        ({"type": "MLP", "nin": 0, "layers": [[1, "linear"]]}, r"nin must be an int in \[1, "),
        ({"type": "MLP", "nin": True, "layers": [[1, "linear"]]}, "nin must be an int"),
        ({"type": "MLP", "nin": 2.0, "layers": [[1, "linear"]]}, "nin must be an int"),
        ({"type": "MLP", "nin": 2**21, "layers": [[1, "linear"]]}, "nin must be an int"),
        ({"type": "MLP", "nin": 2, "layers": [[-3, "relu"]]}, r"layers\[0\] size"),
        ({"type": "MLP", "nin": 2, "layers": [[1, "gelu"]]}, r"layers\[0\] activation"),
        ({"type": "MLP", "nin": 2, "layers": [[1]]}, r"layers\[0\] must be \[size, activation\]"),
        ({"type": "MLP", "nin": 2, "layers": []}, "non-empty list"),
        ({"type": "MLP", "nin": 2, "layers": [[1, "linear"]], "x": 1}, "has the keys"),
        ({"type": "Layer", "nin": 2, "nout": 10**7, "activation": "relu"}, "nout must be"),
        ({"type": "Neuron", "nin": 5, "activation": "relu"}, "needs 6 parameters"),
        ({"type": "Transformer"}, "unknown module type"),
    ],
)
def test_architecture_is_checked_against_the_bound_and_the_weights(name, tmp_path, arch, match):
    real = MLP(2, [1], seed=0, backend=name)  # 3 parameters
    path = _forge(
        tmp_path / "m.json", arch, {k: float.hex(v) for k, v in real.state_dict().items()}
    )
    with pytest.raises(ValueError, match=match):
        load(path, backend=name)
    before = real.state_dict()
    with pytest.raises(ValueError):
        real.load(path)
    assert real.state_dict() == before


def test_each_module_type_round_trips_through_the_checks(name, tmp_path):
    for m in (
        MLP(3, [4, (2, "tanh"), 1], seed=1, backend=name),
        Layer(3, 2, activation="sigmoid", seed=2, backend=name),
        Neuron(4, activation="linear", seed=3, backend=name),
    ):
        path = tmp_path / f"{type(m).__name__}.json"
        m.save(path)
        back = load(path, backend=name)
        assert type(back) is type(m) and back.config() == m.config()
        assert [float.hex(p.data) for p in back.parameters()] == [
            float.hex(p.data) for p in m.parameters()
        ]


def test_deeply_nested_json_is_value_error_not_recursion_error(name, tmp_path):
    m = MLP(2, [1], seed=0, backend=name)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        load(deep, backend=name)
    # Nested inside a file that looks right, under the parser's limit but deep enough
    # to trip anything that walks it recursively afterwards.
    nested: object = 0
    for _ in range(sys.getrecursionlimit() // 2):
        nested = [nested]
    path = _forge(tmp_path / "nested.json", {"type": "MLP", "nin": 2, "layers": nested}, {})
    with pytest.raises(ValueError):
        load(path, backend=name)
    before = m.state_dict()
    with pytest.raises(ValueError):
        m.load(path)
    assert m.state_dict() == before


def test_save_through_a_symlink_writes_the_target(name, tmp_path):
    m = MLP(2, [3, 1], seed=4, backend=name)
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    m.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert load(target, backend=name).state_dict() == m.state_dict()
    assert load(link, backend=name).state_dict() == m.state_dict()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["real.json"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_save_removes_stale_temp_files_of_dead_savers_only(name, tmp_path):
    path = tmp_path / "m.json"
    dead = _dead_pid()
    stale = [tmp_path / f".m.json.{dead}.abc_123.tmp", tmp_path / f".m.json.{dead}.zz9.tmp"]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = [
            tmp_path / f".m.json.{sleeper.pid}.live1.tmp",  # a save in progress elsewhere
            tmp_path / f".m.json.{os.getpid()}.mine.tmp",  # maybe another thread's
            tmp_path / f".other.json.{dead}.x.tmp",  # another file's
            tmp_path / "m.json.tmp",  # not named the way save names them
        ]
        for p in stale + keep:
            p.write_text("partial")
        MLP(2, [1], seed=0, backend=name).save(path)
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in keep)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_save_killed_mid_write_leaves_a_temp_file_the_next_save_removes(name, tmp_path):
    """A child saving is SIGKILLed between writing its temporary file and renaming
    it over the target: the old file survives, the temporary file stays, and the
    next save removes it."""
    path = tmp_path / "m.json"
    old = MLP(2, [3, 1], seed=5, backend=name)
    old.save(path)
    child = textwrap.dedent(
        f"""
        import os, sys, time
        import scalargrad.nn

        def stuck(src, dst):
            print("renaming", flush=True)
            time.sleep(120)

        os.replace = stuck
        scalargrad.nn.MLP(2, [3, 1], seed=6, backend={name!r}).save({str(path)!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "renaming"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    temps = list(tmp_path.glob(f".m.json.{proc.pid}.*.tmp"))
    assert len(temps) == 1
    assert load(path, backend=name).state_dict() == old.state_dict()
    new = MLP(2, [3, 1], seed=7, backend=name)
    new.save(path)
    assert not temps[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    assert load(path, backend=name).state_dict() == new.state_dict()
