"""govedge.tools.dev: what only developers run: the demo, the benchmarks, the simulated sensors and boards,
the broker harness, the annotated example."""
