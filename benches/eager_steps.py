"""Runs micrograd's demo step (``moons-eager``) a given number of times on one
backend and prints every step's time: for profiling the eager path and for seeing a
shared machine's slow spells.

    python benches/eager_steps.py 150 rust          # the step times, every 5th
    valgrind --tool=callgrind python benches/eager_steps.py 6
    valgrind --tool=callgrind python benches/eager_steps.py 1   # the difference / 5
                                                                # is one step's count

The data are 100 random points, so nothing but scalargrad is needed.
"""

import random
import sys

import scalargrad
from scalargrad import bench


def main(steps: int, backend: str) -> None:
    rng = random.Random(0)
    X = [[rng.uniform(-1, 2), rng.uniform(-1, 1)] for _ in range(100)]
    y = [rng.choice([-1, 1]) for _ in range(100)]
    bench._moons = lambda: (X, y)  # no scikit-learn, and the same data every run
    step = bench._eager_stepper(scalargrad.backend_module(backend).Value)
    times = [step() for _ in range(steps)]
    print(" ".join(f"{t * 1e3:.1f}" for t in times[::5]), "ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6, sys.argv[2] if len(sys.argv) > 2 else "rust")
