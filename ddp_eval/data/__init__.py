"""Benchmark rows: readers for VLMEvalKit TSVs and `datasets` directories, images, downloads."""
