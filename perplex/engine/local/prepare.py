"""`python -m perplex.engine.local.prepare`: get the app ready to start fast.

Converts the bundled model once and builds the logit lens's compiled statistics.
"""

from __future__ import annotations

import logging
import sys

from perplex.core.errors import PerplexError
from perplex.core.native import row_stats
from perplex.engine.local.models import ModelSpec, load_model


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
    built = row_stats.load() is not None
    logging.info("Logit lens statistics: %s", "compiled" if built else
                 "torch (no C compiler, or PERPLEX_NATIVE=0; the lens is slower)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
