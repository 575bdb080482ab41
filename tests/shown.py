"""What a reader sees of a markdown string the app wrote: escapes undone, code spans opened.

AppTest returns the markdown source; `plain()` escapes every special character (":" too),
so a test that looks for a phrase reads it as rendered.
"""

from __future__ import annotations

import re


def shown(markdown: str) -> str:
    """`markdown` without its backslash escapes and code-span backticks."""
    return re.sub(r"\\(.)|`", lambda m: m.group(1) or "", markdown)
