"""Answer extraction and metrics: pure functions on strings and numbers (no torch)."""
