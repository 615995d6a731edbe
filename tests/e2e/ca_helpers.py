"""A private certificate authority made with openssl for a test, and a server certificate it
signed."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_ca_and_leaf(directory: Path, name: str, san: str | None = None) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate it signed for `name` (CA:FALSE, with a SAN:
    `DNS:name` unless given, e.g. `IP:127.0.0.1`)."""
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "leaf.key", directory / "leaf.csr", directory / "leaf.pem"
    ext = directory / "leaf.ext"
    ext.write_text(f"basicConstraints=CA:FALSE\nsubjectAltName={san or 'DNS:' + name}\n"
                   "extendedKeyUsage=serverAuth\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "30",
        "-subj", "/CN=yizhan test CA")
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "30", "-extfile", str(ext))
    return ca, cert, key
