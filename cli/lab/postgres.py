"""A throwaway PostgreSQL cluster of our own, to stop and start the database under a running stack.

``initdb`` makes a fresh cluster in ``root/"data"`` (trust auth, superuser ``postgres``);
``start()`` runs it on a free loopback port (the same port across restarts) with its socket in
``root``; ``stop()`` kills it (``immediate`` by default: the way a crash looks to clients);
``destroy()`` stops it and deletes ``root``. PostgreSQL refuses to run as root, so under root the
binaries run as the ``postgres`` OS user and ``root`` is handed to that user: it must then sit
where that user can reach it (``tempfile.mkdtemp()`` under /tmp does; a directory of mode 0700 under
root does not).
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from cli.stack import free_port

INSTALL_HINT = "install PostgreSQL's server binaries (apt-get install postgresql)"
OS_USER = "postgres"


class PostgresNotInstalled(RuntimeError):
    pass


def find_binary(name: str) -> str | None:
    """``name`` on the PATH, else in Debian's versioned /usr/lib/postgresql/*/bin (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    def version(path: str) -> int:
        major = Path(path).parents[1].name
        return int(major) if major.isdigit() else 0

    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version, reverse=True)
    return candidates[0] if candidates else None


def binaries() -> tuple[str, str]:
    """(initdb, pg_ctl); raises PostgresNotInstalled when either is missing."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise PostgresNotInstalled(f"initdb/pg_ctl not found: {INSTALL_HINT}")
    return initdb, pg_ctl


class ThrowawayPostgres:
    def __init__(self, root: Path, *, start_timeout_s: float = 30.0) -> None:
        self.initdb, self.pg_ctl = binaries()
        self.root = Path(root).resolve()
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            self._hand_to_postgres_user()
        self._run([self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres",
                   "-E", "UTF8", "--no-sync", "--no-instructions"])

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server and return once it accepts connections on its TCP port."""
        # fsync off: quicker, and safe against the server being killed (only a crash of the
        # machine loses data). synchronous_commit stays on: a commit acknowledged to a client
        # must survive an immediate stop, which is what tests of outages check.
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                   "-c fsync=off -c full_page_writes=off")
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options,
                   "-w", "-t", str(int(self.start_timeout_s)), "start"])
        self._wait_accepting()

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: no shutdown checkpoint, clients cut off at once)."""
        if not self.running():
            return
        self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"])

    def restart(self, mode: str = "immediate") -> None:
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        if not self.data.exists():
            return False
        status = self._run([self.pg_ctl, "-D", str(self.data), "status"], check=False)
        return status.returncode == 0

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    # --- internals ------------------------------------------------------------------------------

    def _command(self, args: list[str]) -> list[str]:
        if not self._as_root:
            return args
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", OS_USER, "--", *args]
        return ["su", OS_USER, "-s", "/bin/sh", "-c", shlex.join(args)]

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        # cwd: a directory the postgres user can enter (initdb wants to know its current one);
        # output to a file, not a pipe: the server it starts must not hold our pipe open.
        with open(os.devnull, "rb") as stdin:
            proc = subprocess.run(self._command(args), cwd=self.root, stdin=stdin,
                                  capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}"
                               f"{proc.stderr}\n--- server log\n{self.log_text()[-3000:]}")
        return proc

    def _hand_to_postgres_user(self) -> None:
        try:
            user = pwd.getpwnam(OS_USER)
        except KeyError:
            raise PostgresNotInstalled(f"running as root but there is no {OS_USER!r} OS user to "
                                       f"run PostgreSQL as: {INSTALL_HINT}") from None
        os.chown(self.root, user.pw_uid, user.pw_gid)
        os.chmod(self.root, 0o700)
        probe = subprocess.run(self._command(["test", "-w", str(self.root), "-a", "-x", str(self.root)]),
                               capture_output=True, timeout=30)
        if probe.returncode != 0:
            raise RuntimeError(f"the {OS_USER} OS user cannot reach {self.root}: put the cluster "
                               f"under a directory every user may traverse (tempfile.mkdtemp())")

    def _wait_accepting(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                     dbname="postgres", connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL on port {self.port} did not accept "
                                       f"connections: {exc}\n{self.log_text()[-3000:]}") from None
                time.sleep(0.05)
