"""Decoding mode: contrastive decoding, DoLa and speculative decoding, every step recorded."""
