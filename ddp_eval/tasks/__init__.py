"""Benchmark families (tasks): rows, prompts, settings, extraction, metrics and report tables; no torch."""
