"""The load test (`python -m tools.loadtest`): steps of concurrency against a stack's REST and
gRPC endpoints, latency percentiles and the knee, a report with a plot; it must not be imported
by a test process for its runner (gevent patches the process), only its pure parts."""
