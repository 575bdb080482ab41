"""Batch processing: many prompts or transcripts at once, flags, filters, a reader."""
