"""`python -m perplex.prepare`: convert the bundled model once, so the app starts fast."""

from __future__ import annotations

import logging
import sys

from perplex.errors import PerplexError
from perplex.models import ModelSpec, load_model


def main() -> int:
    """Load (and on first use convert) the default model; print what was loaded."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        lm = load_model(ModelSpec())
    except PerplexError as exc:
        logging.error("%s", exc)
        return 1
    action = "converted and loaded" if lm.converted_now else "ready (cached copy)"
    logging.info("%s %s: %.0f M parameters, %d layers, %.1f s", lm.label, action,
                 lm.n_params / 1e6, lm.n_layers, lm.load_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
