"""Multiple-choice benchmarks (MMBench and its kin): option rows, VLMEvalKit's extraction, accuracy, CircularEval."""
