"""Helpers for the TLS / AUTH / submission end-to-end tests (RFC 3207, RFC 8314, RFC 4954).

A server with three listeners (smtp with STARTTLS, submission with STARTTLS, submissions with
implicit TLS), a self-signed certificate made at test time with `openssl req`, and one user with
an argon2id password hashed by `yizhan hash-password`. Nothing is checked in: every key and
certificate is created in the test's temporary directory.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import os
import subprocess
from pathlib import Path

import pytest

from conftest import HOSTNAME, IO_TIMEOUT, POLL_STEP, Server, wait_until

USER = "user@test.example"
PASSWORD = "correct horse battery staple"
OTHER = "user2@test.example"

READY_ALL_RE = re.compile(r"ready listen=([0-9.:\[\] ]+?) data_dir")


def make_cert(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A fresh self-signed P-256 certificate and key (PEM) for `common_name`."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    tmp_cert, tmp_key = directory / "cert.pem.new", directory / "key.pem.new"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(tmp_key), "-out", str(tmp_cert), "-days", "30",
         "-subj", f"/CN={common_name}", "-addext", f"subjectAltName=DNS:{common_name}"],
        check=True, capture_output=True, timeout=30,
    )
    # Started as root, the server reads its key as root, then runs as `yizhan`: a key it must
    # re-read on renewal (SIGHUP, file watch) is given to its group, as a certbot deploy hook
    # does (`chgrp yizhan key.pem; chmod 0640 key.pem`).
    if os.geteuid() == 0:
        import grp
        try:
            os.chown(tmp_key, -1, grp.getgrnam("yizhan").gr_gid)
            os.chmod(tmp_key, 0o640)
        except KeyError:
            pass
    # Renewal tools replace files by rename; so do we.
    tmp_key.replace(key)
    tmp_cert.replace(cert)
    return cert, key


def hash_password(binary: Path, password: str) -> str:
    out = subprocess.run([str(binary), "hash-password"], input=password + "\n",
                         capture_output=True, text=True, timeout=30, check=True)
    phc = out.stdout.strip()
    assert phc.startswith("$argon2id$"), out
    return phc


def client_context() -> ssl.SSLContext:
    """A client context that accepts the test's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_common_name(sock: ssl.SSLSocket) -> str:
    """The CN of the server certificate (parsed with openssl, as verification is off)."""
    der = sock.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem,
                         capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.strip().split("CN", 1)[1].lstrip(" =")


class TlsServer(Server):
    """A Server with smtp, submission and submissions listeners; `ports` by kind."""

    def __init__(self, binary: Path, workdir: Path, auth: dict, smtp: dict, tls: dict):
        self.cert, self.key = make_cert(workdir, HOSTNAME)
        phc = hash_password(binary, PASSWORD)
        lines = [
            f'hostname = "{HOSTNAME}"',
            f'data_dir = "{workdir / "data"}"',
            "",
            '[[listener]]\naddress = "127.0.0.1:0"\nkind = "smtp"',
            '[[listener]]\naddress = "127.0.0.1:0"\nkind = "submission"',
            '[[listener]]\naddress = "127.0.0.1:0"\nkind = "submissions"',
            "",
            "[tls]",
            f'cert = "{self.cert}"',
            f'key = "{self.key}"',
            *(f"{k} = {toml(v)}" for k, v in tls.items()),
            "",
            "[auth]",
            *(f"{k} = {toml(v)}" for k, v in auth.items()),
            "",
            "[smtp]",
            *(f"{k} = {toml(v)}" for k, v in smtp.items()),
            "",
            '[[domain]]\nname = "test.example"',
            f'[[mailbox]]\naddress = "{USER}"\npassword = "{phc}"',
            f'[[mailbox]]\naddress = "{OTHER}"',
            '[[alias]]\naddress = "sales@test.example"\nmembers = ["user@test.example"]',
            "",
        ]
        super().__init__(binary, workdir, "\n".join(lines))
        self.ports: dict[str, int] = {}

    def start(self) -> "TlsServer":
        super().start()
        m = wait_until(lambda: READY_ALL_RE.search(self.log()), 10, "the ready line")
        ports = [int(a.rsplit(":", 1)[1]) for a in m.group(1).split()]
        self.ports = dict(zip(["smtp", "submission", "submissions"], ports))
        return self

    def client(self, kind: str = "submission") -> smtplib.SMTP:
        """smtplib on a listener; implicit TLS for `submissions`, plain (not yet STARTTLS) else."""
        port = self.ports[kind]
        if kind == "submissions":
            return smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.test.example",
                                    timeout=IO_TIMEOUT, context=client_context())
        return smtplib.SMTP("127.0.0.1", port, local_hostname="client.test.example",
                            timeout=IO_TIMEOUT)

    def secure_client(self, kind: str = "submission") -> smtplib.SMTP:
        """A client with TLS active (STARTTLS or implicit) and EHLO sent again."""
        s = self.client(kind)
        s.ehlo()
        if kind != "submissions":
            code, _ = s.starttls(context=client_context())
            assert code == 220
            s.ehlo()
        return s

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        return wait_until(lambda: self.log() if text in self.log() else None, timeout,
                          f"{text!r} in the server log")


def toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def tls_factory(yizhan_bin, tmp_path, request):
    """`tls_factory(auth={...}, smtp={...}, tls={...})` -> a started TlsServer.

    The AUTH failure delay defaults to 50 ms (doubling) so the delay tests stay fast.
    """
    made: list[TlsServer] = []

    def make(auth=None, smtp=None, tls=None) -> TlsServer:
        workdir = tmp_path / f"tls{len(made)}"
        workdir.mkdir()
        auth = {"failure_delay": "50ms", "failure_delay_max": "1s", **(auth or {})}
        srv = TlsServer(yizhan_bin, workdir, auth, smtp or {}, tls or {})
        made.append(srv)
        return srv.start()

    yield make
    for srv in made:
        try:
            srv.kill()
        except Exception:  # noqa: BLE001 - teardown must reach every server
            pass
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for srv in made:
            print(f"---- {srv.workdir.name}: last lines of {srv.log_path} ----")
            print("\n".join(srv.log().splitlines()[-40:]))


@pytest.fixture
def tls_server(tls_factory) -> TlsServer:
    return tls_factory()


__all__ = ["USER", "PASSWORD", "OTHER", "TlsServer", "client_context", "make_cert",
           "peer_common_name", "tls_factory", "tls_server", "POLL_STEP"]
