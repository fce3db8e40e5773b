"""Model families: loading a replica, turning prompts into inputs, and every patch of transformers internals."""
