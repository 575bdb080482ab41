"""Compiled helpers, built on first use where a C compiler is available."""
