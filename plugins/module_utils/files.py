# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing a file so that a reader (or a crash) sees the old content or the new one, never a part of it."""

from __future__ import annotations

import os
import tempfile


def replace_file(path, text, mode, prefix=".tmp-", sync=False):
    """Replace ``path`` with ``text`` through a temporary file in the same directory, given ``mode`` before it is
    renamed over ``path``. ``sync``: flush it to disk first (a file HAProxy reads at its next start)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=prefix)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
