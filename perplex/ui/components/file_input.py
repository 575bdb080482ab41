"""The one file-upload widget: every file a person uploads counts against their hourly limit.

On a hosted server each signed-in user may upload `uploads_per_hour` files (settings); a
file counts once, when it first arrives, whichever page takes it (a chat transcript, a
batch, a calibration dataset, a prompt list, a trait vector or monitor file, a bundle).
"""

from __future__ import annotations

import streamlit as st

from perplex.core.limits import LimitReached
from perplex.ui.shell import resources
from perplex.ui.shell.text import plain

COUNTED_KEY = "perplex.uploads_counted"  # file ids this browser session has counted


def uploaded_file(label: str, *, key: str, type: list[str], help: str | None = None):
    """`st.file_uploader`'s file once it is counted, or None (nothing, or over the limit)."""
    file = st.file_uploader(label, type=type, key=key, help=help)
    if file is None:
        return None
    counted = st.session_state.setdefault(COUNTED_KEY, set())
    if file.file_id not in counted:
        try:
            resources.count_upload()
        except LimitReached as exc:
            st.error(plain(str(exc)))
            return None
        counted.add(file.file_id)
    return file
