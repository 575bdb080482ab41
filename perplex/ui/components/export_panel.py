"""Downloads: token records, annotations, figures and whole-session bundles; bundle import."""

from __future__ import annotations

import streamlit as st

from perplex.core.errors import PerplexError
from perplex.core.plots import caption_line, decoding_caption, entropy_timeline
from perplex.core.records import Generation
from perplex.ui.components.file_input import uploaded_file
from perplex.ui.shell import resources
from perplex.ui.shell.session_panel import current_session_id, switch_to
from perplex.ui.shell.sidebar import thresholds
from perplex.ui.shell.text import plain
from perplex.workspace.annotations import session_annotations
from perplex.workspace.bundles import export_bundle, import_bundle
from perplex.workspace.exports import (
    annotations_csv,
    annotations_json,
    annotations_markdown,
    figure_image,
    tokens_csv,
    tokens_json,
    tokens_parquet,
)


def download(where, label: str, data, **kwargs) -> None:
    """A download button that does not rerun the page when clicked.

    A rerun drops the previous run's deferred files: a second download clicked before it
    ends (CSV, then the bundle) would find its file gone and download nothing.
    """
    where.download_button(label, data, on_click="ignore", **kwargs)


def export_panel(gen: Generation | None, prefix: str) -> None:
    """An expander with every download for the generation on screen and its session."""
    with st.expander("Export and import"):
        if gen is not None:
            _token_downloads(gen, prefix)
            _figure_downloads(gen, prefix)
        sid, store = current_session_id(), resources.store()
        if sid is not None:
            _annotation_downloads(sid, prefix)
            download(st, "Session bundle (.zip, imports on another machine)",
                               data=lambda: export_bundle(store, sid),
                               file_name=f"perplex-session-{sid}.zip",
                               mime="application/zip", key=f"{prefix}.bundle")
        _bundle_import(prefix)


def _token_downloads(gen: Generation, prefix: str) -> None:
    st.markdown("**Token records** (one row per token, with its top-k alternatives)")
    cols = st.columns(3)
    name = f"perplex-{gen.id}"
    download(cols[0], "CSV", data=lambda: tokens_csv([gen]), file_name=f"{name}.csv",
                            mime="text/csv", key=f"{prefix}.csv")
    download(cols[1], "JSON", data=lambda: tokens_json([gen]), file_name=f"{name}.json",
                            mime="application/json", key=f"{prefix}.json")
    download(cols[2], "Parquet", data=lambda: tokens_parquet([gen]),
                            file_name=f"{name}.parquet", key=f"{prefix}.parquet")


def _figure_downloads(gen: Generation, prefix: str) -> None:
    steps = [s for s in gen.message_steps(len(gen.messages) - 1) if s.role.value == "response"]
    figure_downloads(entropy_timeline(steps), f"perplex-{gen.id}-timeline",
                     f"{prefix}.fig.{gen.id}", "Entropy timeline of the last answer",
                     generation_caption(gen))


def generation_caption(gen: Generation) -> str:
    """Where a generation's figure comes from: model, prompt, decoding, its id."""
    prompt = gen.last_user_text
    return caption_line(gen.model_label, f"prompt “{prompt[:80]}{'…' * (len(prompt) > 80)}”"
                        if prompt else "", decoding_caption(gen.params), f"generation {gen.id}")


def figure_downloads(fig, name: str, key: str, title: str, caption: str) -> None:
    """HTML, PNG and SVG downloads of one figure; PNG and SVG are drawn when asked, then kept.

    `name` is the file name without its extension; `key` must change with the figure's
    content (include the id of what it shows), so a drawing is never of an older figure.
    PNG and SVG are laid out for a paper, with `caption` (`core.plots.caption_line`: what
    the figure shows, from which model and settings, when) under the title.
    """
    st.markdown(f"**{plain(title)}**")
    cols = st.columns(3)
    download(cols[0], "Interactive HTML", data=lambda: fig.to_html(include_plotlyjs=True),
             file_name=f"{name}.html", mime="text/html", key=f"{key}.html")
    for col, fmt in zip(cols[1:], ("png", "svg")):
        rendered_key = _rendered_key(key, fmt)
        if rendered_key in st.session_state:
            download(col, f"{fmt.upper()} ready: download", st.session_state[rendered_key],
                     file_name=f"{name}.{fmt}", key=f"{rendered_key}.dl")
        elif col.button(f"Render {fmt.upper()}", key=f"{rendered_key}.go",
                        help="Drawn by kaleido with Chromium; a few seconds the first time."):
            try:
                with st.spinner(f"Drawing {fmt.upper()}…"):
                    st.session_state[rendered_key] = figure_image(fig, fmt, caption=caption)
            except PerplexError as exc:
                st.error(plain(str(exc)))
                return
            st.rerun()


def rendered_figure(key: str, fmt: str) -> bytes | None:
    """The PNG or SVG `figure_downloads` drew under `key`, or None before it is drawn."""
    return st.session_state.get(_rendered_key(key, fmt))


def _rendered_key(key: str, fmt: str) -> str:
    return f"{key}.{fmt}"


def _annotation_downloads(session_id: str, prefix: str) -> None:
    store = resources.store()
    notes = session_annotations(store, session_id)
    if not notes:
        return
    generations = {g: store.load_generation(g) for g in {n.generation_id for n in notes}}
    limit = thresholds().uncertain
    st.markdown(f"**Annotations** ({len(notes)} in this session)")
    cols = st.columns(3)
    download(cols[0], "CSV", data=lambda: annotations_csv(notes, generations, limit),
                            file_name="perplex-annotations.csv", key=f"{prefix}.notes_csv")
    download(cols[1], "JSON", data=lambda: annotations_json(notes, generations, limit),
                            file_name="perplex-annotations.json", key=f"{prefix}.notes_json")
    download(cols[2], "Markdown report",
                            data=lambda: annotations_markdown(notes, generations,
                                                              threshold=limit),
                            file_name="perplex-annotations.md", key=f"{prefix}.notes_md")


def _bundle_import(prefix: str) -> None:
    file = uploaded_file("Import a session bundle (.zip)", type=["zip"],
                         key=f"{prefix}.bundle_upload")
    if file is None or not st.button("Import as a new session", key=f"{prefix}.bundle_go"):
        return
    try:
        session = import_bundle(resources.store(), file.getvalue())
    except PerplexError as exc:
        st.error(plain(str(exc)))
        return
    switch_to(session, read_only=False)
    st.rerun()
