"""The smoke test of a deployed stack (`python -m tools.smoke --stack <stack>`, `make smoke`):
every configured model answers through the public endpoints, REST and gRPC, at the versions and
labels the stack file names, and what must stay closed is closed.

The package is the command (`__main__`), what it calls (target: the stack's endpoints and
expectations; calls: REST and gRPC with timeouts; examples: the example inputs) and the checks;
it must not change anything it calls, nor reach anything but the stack's two endpoints.
"""
