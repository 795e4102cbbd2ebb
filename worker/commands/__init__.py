"""One module per CLI command: each turns options into a run and a result."""
