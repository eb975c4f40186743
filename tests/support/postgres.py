"""A throwaway PostgreSQL cluster on loopback, started from the PostgreSQL binaries on the machine.

Used by the test session and by the PostgreSQL benchmark. PostgreSQL refuses to run as root, so
when the tests run as root the cluster runs as the ``postgres`` system user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CANDIDATE_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
                      "/usr/lib/postgresql/17/bin", "/usr/local/pgsql/bin")


def find_pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    for d in CANDIDATE_BIN_DIRS:
        if Path(d, "pg_ctl").exists():
            return Path(d)
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed; "
                       "install them with: apt-get install -y postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresCluster:
    root: Path
    port: int
    user: str = "oa"
    password: str = "oa-test-password"
    database: str = "openaudience"
    _run_as: str | None = None
    _bin: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": self.user,
                "PGPASSWORD": self.password, "PGDATABASE": self.database}

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self._bin / args[0]), *args[1:]]
        if self._run_as:
            return ["runuser", "-u", self._run_as, "--", *cmd]
        return cmd

    def start(self) -> PostgresCluster:
        self._bin = find_pg_bin()
        if os.geteuid() == 0:
            self._run_as = "postgres"
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("PostgreSQL will not run as root and there is no 'postgres' "
                                   "user; install the server with: apt-get install -y postgresql"
                                   ) from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        data = self.root / "data"
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        subprocess.run(self._cmd("initdb", "-D", str(data), "-U", self.user, "--pwfile",
                                 str(pwfile), "-A", "scram-sha-256", "-E", "UTF8",
                                 "--locale=C"), check=True, capture_output=True)
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.root}'",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "shared_buffers = 256MB",
            "work_mem = 64MB",
            "maintenance_work_mem = 256MB",
            "max_connections = 50",
            "timezone = 'UTC'",
        ]
        if os.environ.get("OA_TEST_PG_SLOW_MS"):  # statements slower than this go to server.log
            conf.append(f"log_min_duration_statement = {int(os.environ['OA_TEST_PG_SLOW_MS'])}")
        with open(data / "postgresql.conf", "a") as fh:
            fh.write("\n".join(conf) + "\n")
        subprocess.run(self._cmd("pg_ctl", "-D", str(data), "-l", str(self.root / "server.log"),
                                 "-w", "-t", "60", "start"), check=True, capture_output=True)
        self._wait()
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                password=self.password, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'create database "{self.database}"')
        conn.close()
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL did not accept connections on port {self.port}")

    def reset_database(self, name: str, template: str | None = None) -> dict[str, str]:
        """Create (or recreate) a database, empty or a copy of `template`, and return the env
        that points at it."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                password=self.password, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
            if template:
                cur.execute(f'create database "{name}" template "{template}"')
            else:
                cur.execute(f'create database "{name}"')
        conn.close()
        return {**self.env, "PGDATABASE": name}

    def stop(self) -> None:
        if self._bin is None:
            return
        subprocess.run(self._cmd("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate",
                                 "-w", "stop"), capture_output=True)


def start_cluster() -> PostgresCluster:
    root = Path(tempfile.mkdtemp(prefix="oa-pg-"))
    os.chmod(root, 0o755)
    return PostgresCluster(root=root, port=free_port()).start()
