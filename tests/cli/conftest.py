"""Filesystems that refuse writes, for the command line's disk errors (issue 19).

As root, permissions do not stop a write, so a read-only or a small full filesystem is a tmpfs
mounted for the test; without root, a folder without write permission and a file-size limit
(``RLIMIT_FSIZE``: writes past it fail with EFBIG) stand in. Where neither works the test is
skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Big enough for a few thousand short result lines, small enough to fill in a second.
SMALL_DISK_BYTES = 256 * 1024


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[bool]:
    """Mount a tmpfs at ``path`` for the block; yields whether the mount worked."""
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if not (sys.platform.startswith("linux") and _is_root() and mount and umount):
        yield False
        return
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run([umount, "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nothing can be created in."""
    path = tmp_path / "read-only"
    path.mkdir()
    if sys.platform == "win32":
        pytest.skip("POSIX permissions")
    if not _is_root():
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with _tmpfs(path, "ro,size=64k") as mounted:
        if not mounted:
            pytest.skip("running as root without permission to mount a read-only tmpfs")
        yield path


@dataclass(frozen=True)
class SmallDisk:
    """Where writes fail past :data:`SMALL_DISK_BYTES`, and how to start a process there."""

    path: Path
    preexec_fn: Callable[[], None] | None
    reason: str  # the words the OS uses for the failure


def _limit_file_size() -> None:
    import resource

    # The default action of SIGXFSZ kills the process; ignored, the write fails with EFBIG.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (SMALL_DISK_BYTES, SMALL_DISK_BYTES))


@pytest.fixture(params=["full-tmpfs", "file-size-limit"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    """A filesystem that fills up (tmpfs, ENOSPC) or a file-size limit (EFBIG)."""
    path = tmp_path / "small-disk"
    path.mkdir()
    if request.param == "file-size-limit":
        if sys.platform == "win32" or not hasattr(signal, "SIGXFSZ"):
            pytest.skip("no RLIMIT_FSIZE on this platform")
        yield SmallDisk(path, _limit_file_size, "File too large")
        return
    with _tmpfs(path, f"size={SMALL_DISK_BYTES}") as mounted:
        if not mounted:
            pytest.skip("a small tmpfs needs root and mount (Linux)")
        yield SmallDisk(path, None, "No space left on device")
