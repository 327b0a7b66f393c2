"""Change markers: small files a process replaces after it committed a change, which every
server process watches to drop what it cached (pages, TUF timestamp and root)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


class ChangeMarker:
    """One marker file. ``write`` replaces it atomically (temp file + rename); ``changed`` costs one
    ``stat`` per look and also compares the content at least once a second, because a replaced
    file's inode can be reused within one timestamp tick."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.content = ""
        """What the file said at the last look that saw a change."""
        self._stat: tuple[int, int, int] = (-1, -1, -1)
        self._next_content_check = 0.0

    def write(self, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}-")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, self.path)

    def changed(self) -> bool:
        """True when another write happened since the last look that returned True."""
        try:
            st = os.stat(self.path)
            stat = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stat = (0, 0, 0)
        now = time.monotonic()
        if stat == self._stat and now < self._next_content_check:
            return False
        self._next_content_check = now + 1.0
        content = self._read()
        if stat == self._stat and content == self.content:
            return False
        self._stat, self.content = stat, content
        return True

    def _read(self) -> str:
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return ""
