"""Persona traits: trait definitions, trait vectors, per-token projections, steering."""
