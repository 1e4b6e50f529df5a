"""devtrail benchmarks: programs that measure each stage against its physical limit.

Run ``make bench`` (full) or ``devtrail bench --quick --json`` (about two minutes). Each
run prints its figures and writes ``bench/results/<timestamp>-<mode>.json``.
"""
