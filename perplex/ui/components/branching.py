"""Continuing a generation as a branch: a forced token (or path) and the model's rest."""

from __future__ import annotations

from dataclasses import replace

from perplex.core.errors import PerplexError
from perplex.core.records import DecodeParams, Generation, TokenStep
from perplex.engine.protocol import Engine
from perplex.ui.components.live import LiveGeneration, kept
from perplex.ui.shell.session_panel import save_to_session
from perplex.ui.shell.sidebar import thresholds


def continue_as_branch(gen: Generation, step: TokenStep, forced: str | int | tuple[int, ...],
                       title: str, page_key: str, engine: Engine | None,
                       params: DecodeParams) -> None:
    """Force `forced` at `step` and decode on, streamed; the branch is saved as it grows."""
    if engine is None:
        raise PerplexError("Load a model (sidebar) to regenerate.")
    run = engine.inject(gen, step.position, forced, params)
    th = thresholds()
    view = LiveGeneration(key=f"{page_key}-inject-live", confident=th.confident,
                          uncertain=th.uncertain, expected=params.max_new_tokens)
    shown = []
    with kept(run, lambda g: save_to_session(replace(g, title=title), page_key)):
        for new in run:
            if new.message_index == step.message_index and new.role is step.role:
                shown.append(new)
                view.update(shown)
    save_to_session(replace(run.generation(), title=title), page_key)
