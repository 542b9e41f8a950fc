"""As root the embedded PostgreSQL runs as another user: which directory would stop it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.postgres import blocking_directory

NOBODY = 65534


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory every user can reach (pytest's own tmp_path is private to its user)."""
    path = Path(tempfile.mkdtemp(dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_a_directory_others_cannot_enter_is_named_and_left_unchanged(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = home / "project" / ".payments" / "postgres"
    data.mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(home, 0o700)
    assert blocking_directory(data, NOBODY, NOBODY) == home
    assert home.stat().st_mode & 0o777 == 0o700  # not chmod-ed behind the user's back
    os.chmod(home, 0o701)
    assert blocking_directory(data, NOBODY, NOBODY) is None


def test_the_owner_and_the_group_bits_count_for_their_user(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)
    me = private.stat()
    assert blocking_directory(private / "x", me.st_uid, me.st_gid) is None
    assert blocking_directory(private / "x", NOBODY, NOBODY) == private
