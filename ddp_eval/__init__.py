"""ddp_eval: data-parallel evaluation of vision-language models (one full replica per rank)."""

__version__ = "0.1.0"
