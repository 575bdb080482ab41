"""Tampering with a session bundle the way an attacker would: one member edited, resealed.

The manifest's size and checksum of the member are made to match, so what the import
checks next is the member's content itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable


def resealed(bundle: bytes, member: str, edit: Callable[[bytes], bytes]) -> bytes:
    """The bundle with `member`'s bytes passed through `edit`, the manifest made to match."""
    with zipfile.ZipFile(io.BytesIO(bundle)) as src:
        contents = {info.filename: src.read(info.filename) for info in src.infolist()}
    contents[member] = edit(contents[member])
    manifest = json.loads(contents["manifest.json"])
    manifest["members"][member] = {"bytes": len(contents[member]),
                                   "sha256": hashlib.sha256(contents[member]).hexdigest()}
    contents["manifest.json"] = json.dumps(manifest).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for name, content in contents.items():
            dst.writestr(name, content)
    return out.getvalue()


def rezip(data: bytes, change=None, drop=(), add=None) -> bytes:
    """Rebuild a bundle with a member changed, dropped or added."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename in drop:
                continue
            content = src.read(info.filename)
            if change and info.filename in change:
                content = change[info.filename](content)
            dst.writestr(info.filename, content, compress_type=zipfile.ZIP_DEFLATED)
        for name, content in (add or {}).items():
            dst.writestr(name, content, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def resigned(data: bytes, name: str, edit) -> bytes:
    """A bundle with one JSON member edited and the manifest's checksum made to match."""
    return resealed(data, name, lambda content: json.dumps(edit(json.loads(content))).encode())


def set_first(key, value):
    def edit(items):
        items[0][key] = value
        return items
    return edit
