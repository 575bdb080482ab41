"""How forward passes share one Python process with a web server's threads.

Every torch call of a forward pass lets go of the GIL and must win it back afterwards.
Beside a thread busy in Python (a page being drawn, a file being parsed), each win back
waits out the interpreter's whole switch interval, 5 ms by default: on the bundled model
generation fell from 67 to 0.9 tokens/s beside one such thread (`make bench`, stage gil).
A short interval makes the busy thread hand the GIL back sooner, at a small cost to it.
"""

from __future__ import annotations

import sys

SERVER_SWITCH_INTERVAL = 2e-4  # s; bench stage gil measures it against the default


def share_with_forward_passes() -> None:
    """Set this process's switch interval for a server that runs forward passes in threads."""
    sys.setswitchinterval(SERVER_SWITCH_INTERVAL)
