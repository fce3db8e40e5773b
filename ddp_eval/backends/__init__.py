"""Inference engines: a prepared batch in, one reply per row out (transformers today)."""
