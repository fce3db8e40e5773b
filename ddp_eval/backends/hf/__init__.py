"""The transformers backend: `generate` (or the model family's fast path) on one replica."""
