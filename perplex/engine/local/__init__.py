"""The local engine: transformers models on this machine, with their internals."""
