"""Runs the benchmark workloads of DESIGN.md section 7 side by side in one process
and prints times and ratios (``--quick`` for a short run). The same as
``scalargrad bench``; micrograd and torch join when installed."""

import sys

from scalargrad.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
