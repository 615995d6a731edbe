"""DKIM signing (issue #14, RFC 6376, RFC 8463), checked by an independent verifier (dkimpy).

Keys are made with `yizhan dkim generate`, which prints the DNS record; the verifier gets that
record from a DNS function instead of a resolver. Mail from `relay_networks` (our users) is
signed with the key of its From: domain, for RSA and Ed25519, for ASCII, 8-bit and SMTPUTF8
messages; mail from strangers is not.
"""

import os
import re
import smtplib
import subprocess

import dkim
import pytest

from conftest import IO_TIMEOUT
from tls_helpers import tls_factory  # noqa: F401 - fixture

DOMAINS = {"rsa.example": "rsa-sha256", "ed.example": "ed25519-sha256"}


def generate(yizhan_bin, srv, domain, algorithm):
    out = subprocess.run(
        [str(yizhan_bin), "dkim", "generate", "--config", str(srv.config), "--domain", domain,
         "--selector", "s1", "--algorithm", algorithm,
         "--key", str(srv.workdir / f"{domain}.pem")],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if " IN TXT " in l)
    name, _, quoted = line.partition(" IN TXT ")
    assert name == f"s1._domainkey.{domain}."
    record = "".join(re.findall(r'"([^"]*)"', quoted))
    block = out.stdout[out.stdout.index("[[dkim]]"):]
    return name, record.encode(), block


def dkim_server(server_factory, yizhan_bin, relay):
    smtp = {"relay_networks": ["127.0.0.0/8"]} if relay else {}
    srv = server_factory(smtp=smtp, start=False)
    records = {}
    blocks = []
    for domain, algorithm in DOMAINS.items():
        name, record, block = generate(yizhan_bin, srv, domain, algorithm)
        records[name.encode()] = record
        blocks.append(block)
    srv.config.write_text(srv.config.read_text() + "\n" + "\n".join(blocks))
    srv.start()
    return srv, records


def send(srv, sender, message, options=()):
    with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.test.example",
                      timeout=IO_TIMEOUT) as s:
        s.sendmail(sender, ["user@test.example"], message, mail_options=list(options))


def delivered(srv, count):
    files = srv.wait_mail("user@test.example", count)
    # Maildir stores LF line ends; the signature was made over CRLF.
    return files[-1].read_bytes().replace(b"\n", b"\r\n")


CASES = [
    ("rsa.example", b"From: Ann <ann@rsa.example>\r\nTo: user@test.example\r\n"
     b"Subject: plain\r\nDate: Sat, 05 Dec 2026 12:00:00 +0000\r\n"
     b"Message-ID: <1@rsa.example>\r\n\r\nHello,\r\n  spaced   line \r\n\r\n\r\n", ()),
    ("ed.example", "From: Bo <bo@ed.example>\r\nTo: user@test.example\r\nSubject: 8bit\r\n"
     "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
     "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus dem Süden, 驿站.\r\n".encode(),
     ("BODY=8BITMIME",)),
    ("rsa.example", "From: Zoë <zoe@rsa.example>\r\nTo: user@test.example\r\n"
     "Subject: Привет, 驿站\r\n\r\nUTF-8 header and body.\r\n".encode(), ("SMTPUTF8",)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_our_mail_is_signed_and_dkimpy_verifies_it(server_factory, yizhan_bin, case):
    srv, records = dkim_server(server_factory, yizhan_bin, relay=True)
    domain, message, options = CASES[case]
    send(srv, f"sender@{domain}", message, options)
    stored = delivered(srv, 1)
    assert b"DKIM-Signature:" in stored, stored[:600]
    signature = stored[stored.index(b"DKIM-Signature:"):].split(b"\r\n\r\n")[0]
    assert b"d=" + domain.encode() in signature, signature
    assert b"a=" + DOMAINS[domain].encode() in signature, signature
    assert b"c=relaxed/relaxed" in signature, signature
    # dkimpy ignores what precedes the signature (Return-Path, our Received).
    ok = dkim.verify(stored, dnsfunc=lambda name, timeout=5: records.get(name))
    assert ok, stored.decode(errors="replace")[:2000]
    # The verifier is not fooled: one changed body byte fails it.
    tampered = stored.replace(b"\r\n\r\n", b"\r\n\r\nX", 1)
    assert not dkim.verify(tampered, dnsfunc=lambda name, timeout=5: records.get(name))


def test_mail_from_strangers_is_not_signed(server_factory, yizhan_bin):
    srv, _ = dkim_server(server_factory, yizhan_bin, relay=False)
    domain, message, options = CASES[0]
    send(srv, f"sender@{domain}", message, options)
    assert b"DKIM-Signature:" not in delivered(srv, 1)


def test_a_bad_key_is_a_configuration_problem(server_factory, yizhan_bin, tmp_path):
    srv = server_factory(start=False)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    srv.config.write_text(srv.config.read_text() + f'\n[[dkim]]\ndomain = "rsa.example"\n'
                          f'selector = "s1"\nkey = "{bad}"\n')
    out = subprocess.run([str(yizhan_bin), "check-config", "--config", str(srv.config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert re.search(r"yizhan\.toml:\d+:\d+: dkim\[0\]\.key: .*bad\.pem: cannot read the private key",
                     out.stderr), out.stderr


def test_dkim_check_compares_the_published_record_with_the_key(server_factory, yizhan_bin):
    from outbound_helpers import TestDns
    srv = server_factory(start=False)
    names = {}
    blocks = []
    for domain, algorithm in DOMAINS.items():
        name, record, block = generate(yizhan_bin, srv, domain, algorithm)
        names[domain] = (name, record)
        blocks.append(block)
    (rsa_name, rsa_record), (ed_name, _) = names["rsa.example"], names["ed.example"]
    # rsa.example publishes its own key; ed.example publishes rsa.example's (a wrong key).
    dns = TestDns({rsa_name: [("TXT", rsa_record)], ed_name: [("TXT", rsa_record)]})
    try:
        srv.config.write_text(srv.config.read_text() + "\n" + "\n".join(blocks)
                              + f'\n[delivery]\ndns_servers = ["127.0.0.1:{dns.port}"]\n')

        def check(domain):
            return subprocess.run([str(yizhan_bin), "dkim", "check", "--config", str(srv.config),
                                   "--domain", domain], capture_output=True, text=True, timeout=60)
        good = check("rsa.example")
        assert good.returncode == 0, good.stderr
        assert "the published record matches" in good.stdout
        wrong = check("ed.example")
        assert wrong.returncode == 1
        assert "does not match" in wrong.stderr and "k=ed25519" in wrong.stderr, wrong.stderr
        unknown = check("none.example")
        assert unknown.returncode == 1 and "no [[dkim]] key for none.example" in unknown.stderr
    finally:
        dns.stop()


def keys_by_reload(yizhan_bin, srv, domains):
    """Generates an Ed25519 key for each of `domains`, adds them to the running server with
    `yizhan reload`, and returns {record name: record} for dkimpy."""
    records = {}
    for domain in domains:
        name, record, block = generate(yizhan_bin, srv, domain, "ed25519-sha256")
        records[name.encode()] = record
        srv.config.write_text(srv.config.read_text() + "\n" + block)
    done = subprocess.run([str(yizhan_bin), "reload", "--config", str(srv.config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return records


def submit_as_user(srv, messages):
    """Submission (RFC 6409) over STARTTLS with AUTH as the test user: each (From: address,
    subject) as one message to user@test.example."""
    from tls_helpers import PASSWORD, USER, client_context
    s = srv.client("submission")
    s.ehlo()
    s.starttls(context=client_context())
    s.ehlo()
    s.login(USER, PASSWORD)
    for sender, subject in messages:
        s.sendmail(USER, ["user@test.example"],
                   f"From: <{sender}>\r\nTo: <user@test.example>\r\nSubject: {subject}\r\n\r\nHi.\r\n")
    s.quit()


def test_an_authenticated_users_mail_is_signed_after_a_reload_adds_the_key(tls_factory, yizhan_bin):
    """Submission (RFC 6409) over STARTTLS with AUTH: the user's mail is signed with the key a
    reload brought in, and dkimpy verifies it."""
    from tls_helpers import USER
    srv = tls_factory()
    records = keys_by_reload(yizhan_bin, srv, ["test.example"])
    submit_as_user(srv, [(USER, "signed")])
    stored = srv.wait_mail("user@test.example")[-1].read_bytes().replace(b"\n", b"\r\n")
    assert b"d=test.example" in stored, stored[:800]
    assert dkim.verify(stored, dnsfunc=lambda n, timeout=5: records.get(n))


def test_a_user_is_signed_for_only_as_themselves(tls_factory, yizhan_bin):
    """A signature vouches for the From: address, so an authenticated user of one domain gets
    none on mail that claims another domain we hold a key for, nor one that claims a
    colleague's address in its own domain."""
    from tls_helpers import USER
    srv = tls_factory()
    keys_by_reload(yizhan_bin, srv, ["test.example", "ed.example"])
    submit_as_user(srv, [("boss@ed.example", "forged"), ("colleague@test.example", "colleague"),
                         (USER, "mine")])
    texts = [f.read_bytes() for f in srv.wait_mail("user@test.example", 3)]
    colleague = next(t for t in texts if b"Subject: colleague" in t)
    assert b"DKIM-Signature" not in colleague, "a colleague's address is not the user's"
    forged = next(t for t in texts if b"Subject: forged" in t)
    mine = next(t for t in texts if b"Subject: mine" in t)
    assert b"DKIM-Signature" not in forged, forged[:600]
    assert b"d=test.example" in mine, mine[:600]
    assert "not DKIM-signed: the From: address is not the sender's own" in srv.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_local_user_is_signed_for_only_as_themselves(server_factory, yizhan_bin):
    """Another local user's sendmail (the submission socket): `From: ceo@` our domain is not
    signed, their own address is, and dkimpy verifies it."""
    srv = server_factory(start=False)
    name, record, block = generate(yizhan_bin, srv, "mx.test.example", "ed25519-sha256")
    srv.config.write_text(srv.config.read_text() + "\n" + block)
    srv.start()
    os.chmod(srv.config, 0o644)
    env = {"PATH": "/usr/bin:/bin", "LOGNAME": "nobody", "HOME": "/nonexistent"}
    for sender in ("ceo@mx.test.example", "nobody@mx.test.example"):
        done = subprocess.run(
            [str(yizhan_bin), "sendmail", "-C", str(srv.config), "user@test.example"],
            input=f"From: <{sender}>\r\nSubject: {sender}\r\n\r\nHello.\r\n".encode(),
            capture_output=True, timeout=60, env=env, user="nobody", group="nogroup",
            extra_groups=[])
        assert done.returncode == 0, done.stderr
    files = srv.wait_mail("user@test.example", 2)
    texts = {f: f.read_bytes().replace(b"\n", b"\r\n") for f in files}
    ceo = next(t for t in texts.values() if b"Subject: ceo@" in t)
    own = next(t for t in texts.values() if b"Subject: nobody@" in t)
    assert b"DKIM-Signature" not in ceo, ceo[:600]
    assert dkim.verify(own, dnsfunc=lambda n, timeout=5: record if n == name.encode() else None)
