"""Yes/no benchmarks (MME, POPE, HallusionBench): prompt text, answer extraction and metrics, as VLMEvalKit."""
