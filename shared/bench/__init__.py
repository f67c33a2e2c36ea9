"""Benchmarks behind ``make bench``: each measures one thing side by side with its baseline
and lands in ``reports/bench.json`` in the layout of the team's REPORTS.md."""
