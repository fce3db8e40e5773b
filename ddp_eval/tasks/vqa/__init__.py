"""Short-answer VQA benchmarks (TextVQA, DocVQA, ChartQA, OCRBench): prompts and VLMEvalKit scoring."""
