"""Pure types and logic shared by every stage: samples, batches, the plan, prefix splitting (no torch, no I/O)."""
