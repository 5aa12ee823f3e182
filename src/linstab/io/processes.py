"""Whether a process still runs: files named after a process (temporary files, staging folders)
are stale once it is gone.
"""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (another user's counts as alive).

    Args:
        pid: a process id.

    Returns:
        ``False`` only when no such process exists.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True
