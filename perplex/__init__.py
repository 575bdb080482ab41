"""Perplex: token-level probabilities of language models, made visible and interactive."""
