"""Calibration mode: confidence stated and token-probability, answer checking, metrics."""
