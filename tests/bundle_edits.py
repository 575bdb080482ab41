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
