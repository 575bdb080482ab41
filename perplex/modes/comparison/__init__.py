"""Comparison mode: two conditions (model, system prompt) on the same input, token by token."""
