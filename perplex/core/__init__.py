"""Records, errors, settings, tokenisation and statistics: what every layer shares."""
