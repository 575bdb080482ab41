"""Real-browser tests."""
