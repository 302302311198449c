"""A fleet on real pods in the local cluster: the chart-installed operator pod, an in-cluster
model source, and an example fleet adapted to the real node. Used by `make demo` and by the e2e
suite in tests/e2e/realpods; needs the repository (the chart and examples/)."""
