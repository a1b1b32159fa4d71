"""Jobs end to end (scan, train, predict, evaluate): each owns model loading, runtime, sharding and output guards,
and returns results; the CLI, the demo and the benchmarks call these and only render."""
