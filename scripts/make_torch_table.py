"""Writes ``tests/torch_table.json``: PyTorch's float64 values and gradients for every
case of ``tests/torch_cases.py`` (every op over a grid of inputs, and micrograd's test
expressions). ``tests/test_torch.py`` checks both backends against the table, so the
comparison with PyTorch runs where torch is not installed.

Run it where torch is installed, after changing the cases::

    pip install torch
    python scripts/make_torch_table.py

Floats are stored with ``float.hex``, so the table is exact (``inf`` and ``nan``
included)."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

TESTS = pathlib.Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import torch  # noqa: E402
import torch_cases  # noqa: E402


def table() -> dict:
    torch.set_num_threads(1)
    cases = {}
    for case in torch_cases.CASES:
        name, op, _, inputs = case
        if name in cases:
            raise SystemExit(f"make_torch_table: duplicate case name {name!r}")
        value, grads = torch_cases.run_torch(torch, case)
        cases[name] = {
            "op": op,
            "inputs": [float(x).hex() for x in inputs],
            "value": value.hex(),
            "grads": [g.hex() for g in grads],
        }
    return {"torch": torch.__version__.split("+")[0], "cases": cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(TESTS / "torch_table.json"), help="%(default)s")
    args = parser.parse_args()
    body = table()
    # one case a line, so that a change to the table reads as a diff of its cases
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in body["cases"].items())
    text = f'{{\n "torch": {json.dumps(body["torch"])},\n "cases": {{\n{rows}\n }}\n}}\n'
    assert json.loads(text) == body
    pathlib.Path(args.out).write_text(text)
    print(f"wrote {len(body['cases'])} cases (torch {body['torch']}) to {args.out}")


if __name__ == "__main__":
    main()
