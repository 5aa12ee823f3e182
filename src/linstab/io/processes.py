"""Whether a process still runs: files named after a process (temporary files, staging folders)
are stale once it is gone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


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


def tmp_path(path: Path) -> Path:
    """A unique temporary name next to ``path`` (same file system, so os.replace is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")


def clean_stale_tmp(path: Path) -> int:
    """Remove the temporary files of ``path`` (:func:`tmp_path`) that a killed process left (a
    process killed while saving); those of running processes stay. Returns how many.
    """
    n = 0
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            n += 1
    return n


class PidLock:
    """A lock file ``<path>.lock`` holding the id of the process that works on ``path`` (a long
    run's checkpoint): a second process refuses to start on the same file while the first one
    runs; a lock left by a process that is gone (killed with SIGKILL) is taken over.

    Use as a context manager; the lock file is removed on exit.

    Args:
        path: the file the lock protects.
        what: how the file is called in the error message.

    Raises:
        ValueError: on entering, when another running process holds the lock.
    """

    def __init__(self, path: str | os.PathLike, what: str = "file") -> None:
        self.target = Path(path)
        self.path = self.target.with_name(self.target.name + ".lock")
        self.what = what
        self._held = False

    def owner(self) -> int | None:
        """The process id written in the lock file (``None``: no lock, or an unreadable one)."""
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        return True

    def __enter__(self) -> PidLock:
        if not self._create():
            other = self.owner()
            if other is not None and other != os.getpid() and pid_alive(other):
                raise ValueError(
                    f"the {self.what} {self.target} is in use by process {other}, which still runs "
                    f"(lock file {self.path}): let it finish or stop it (kill {other}) first"
                )
            self.path.unlink(missing_ok=True)  # its process is gone: a stale lock
            if not self._create():
                raise ValueError(f"the {self.what} {self.target} was just locked by another process")
        self._held = True
        return self

    def __exit__(self, *exc) -> None:
        if self._held and self.owner() == os.getpid():
            self.path.unlink(missing_ok=True)
        self._held = False
