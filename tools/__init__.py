"""Command-line entry points (offline preview, ...): thin wrappers over library code."""
