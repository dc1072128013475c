"""Files that hold secrets (keys, access keys, configs with them): never readable by others,
not even for a moment."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` with mode 0600, atomically: a temporary file made 0600 from the
    start (whatever the umask), then renamed over `path`."""
    if isinstance(data, str):
        data = data.encode()
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
