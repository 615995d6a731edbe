"""A private PostgreSQL for the shared-queue tests: Debian's binaries, `initdb` and `pg_ctl`
in the test's temporary directory (run as the `postgres` account when the tests run as root,
as initdb refuses root), trust authentication on 127.0.0.1 only, no system service."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from outbound_helpers import free_port


def binaries() -> Path | None:
    base = Path("/usr/lib/postgresql")
    found = sorted(p / "bin" for p in base.iterdir() if (p / "bin" / "initdb").exists()) \
        if base.is_dir() else []
    return found[-1] if found else None


class Postgres:
    """`tls` = (certificate, key) files: TLS on, with that certificate."""

    def __init__(self, root: Path, tls: tuple[Path, Path] | None = None):
        self.bin = binaries()
        if self.bin is None:
            pytest.skip("PostgreSQL is not installed")
        self.root = root
        self.root.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            for parent in root.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        self.port = free_port("127.0.0.1")
        self.data = root / "data"
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1"
        if tls is not None:
            cert, key = root / "server.crt", root / "server.key"
            shutil.copyfile(tls[0], cert)
            shutil.copyfile(tls[1], key)
            key.chmod(0o600)
            if os.geteuid() == 0:
                for f in (cert, key):
                    shutil.chown(f, "postgres", "postgres")
            options += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
        self.options = options
        self.start()

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-o", self.options, "-l",
                 str(self.root / "log"), "-w", "start")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"{tool}: {done.stdout}{done.stderr}")
        return done

    def sql(self, query: str) -> str:
        """One query's result, unaligned, through psql."""
        psql = shutil.which("psql") or str(self.bin / "psql")
        done = subprocess.run([psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                               "-At", "-c", query], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            pytest.fail(f"psql {query!r}: {done.stderr}")
        return done.stdout.strip()

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")


@pytest.fixture
def postgres(tmp_path):
    pg = Postgres(tmp_path / "pg")
    yield pg
    pg.stop()
