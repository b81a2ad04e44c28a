"""Development tools: the local stack, simulation, benchmarks and soak runs, the Temporal dev-server launcher."""
