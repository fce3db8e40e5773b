"""The process group, rank completion, the progress bar and stop signals."""
