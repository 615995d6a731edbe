"""Inbound checks (issue #14, section 2): SPF (RFC 7208), DKIM (RFC 6376), ARC (RFC 8617) and
DMARC (RFC 7489) on the smtp listener, reported in one Authentication-Results field (RFC 8601).

Every name is served by a test DNS server that yizhan's `delivery.dns_servers` points at; the
same records are given to the independent implementations (pyspf for SPF, dkimpy for DKIM
and ARC), and their verdicts must be yizhan's. The client connects from 127.0.0.1, so
`[checks] exempt = []` (by default this host is exempt, as in rspamd).
"""

import re
import smtplib
import subprocess

import dkim
import dns.resolver
import pytest
import spf

from conftest import IO_TIMEOUT
from outbound_helpers import TestDns

HELO = "client.test.example"
IP = "127.0.0.1"


def rsa_key(tmp_path, name):
    """A 2048-bit RSA key (PKCS#1 PEM, as dkimpy signs with) and its DKIM record."""
    pem = tmp_path / f"{name}.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(pem), "2048"],
                   check=True, capture_output=True, timeout=60)
    der = subprocess.run(["openssl", "rsa", "-in", str(pem), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True, timeout=60).stdout
    import base64
    return pem.read_bytes(), "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keys")
    return {name: rsa_key(tmp, name) for name in ("signed", "arc")}


def zone(keys):
    return {
        HELO: [("TXT", f"v=spf1 ip4:{IP} -all")],
        "pass.example": [("TXT", f"v=spf1 ip4:{IP} -all")],
        "_dmarc.pass.example": [("TXT", "v=DMARC1; p=reject")],
        "fail.example": [("TXT", "v=spf1 -all")],
        "_dmarc.fail.example": [("TXT", "v=DMARC1; p=reject")],
        "soft.example": [("TXT", "v=spf1 ~all")],
        "_dmarc.soft.example": [("TXT", "v=DMARC1; p=quarantine")],
        "neutral.example": [("TXT", "v=spf1 ?all")],
        "none.example": [("A", "192.0.2.1")],
        "temp.example": [("RCODE", "SERVFAIL")],
        "_dmarc.temp.example": [("RCODE", "SERVFAIL")],
        "signed.example": [("TXT", "v=spf1 -all")],
        "_dmarc.signed.example": [("TXT", "v=DMARC1; p=reject")],
        "s1._domainkey.signed.example": [("TXT", keys["signed"][1])],
        "s1._domainkey.arc.example": [("TXT", keys["arc"][1])],
    }


@pytest.fixture
def dns_zone(keys):
    server = TestDns(zone(keys))
    yield server
    server.stop()


def checking_server(server_factory, dns_zone, checks="", smtp=None):
    extra = (f'[delivery]\ndns_servers = ["127.0.0.1:{dns_zone.port}"]\n\n'
             f'[checks]\nexempt = []\n{checks}\n')
    return server_factory(extra=extra, smtp=smtp)


def message(sender_domain, subject, extra_headers=""):
    return (f"From: Someone <someone@{sender_domain}>\r\nTo: <user@test.example>\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{subject}@{sender_domain}>\r\n"
            f"{extra_headers}\r\nHello from {sender_domain}.\r\n").encode()


def send(srv, sender, data):
    with smtplib.SMTP("127.0.0.1", srv.port, local_hostname=HELO, timeout=IO_TIMEOUT) as s:
        s.sendmail(sender, ["user@test.example"], data)


def delivered(srv, subject, count):
    """The header section of the delivered message whose Subject is `subject`."""
    for path in srv.wait_mail("user@test.example", count):
        text = path.read_text()
        if f"Subject: {subject}\n" in text:
            return text.split("\n\n")[0]
    raise AssertionError(f"no delivered message {subject!r}")


def results(header):
    """Our Authentication-Results field, unfolded: {method: result}, and the raw text."""
    fields = re.findall(r"^Authentication-Results: mx\.test\.example;(.*(?:\n[ \t].*)*)",
                        header, re.M)
    assert len(fields) == 1, header
    text = " ".join(fields[0].split())
    found = {}
    for part in text.split(";"):
        m = re.match(r"\s*([a-z]+)=([a-z]+)(.*)", part)
        if m:
            method, result, rest = m.groups()
            key = method
            if method == "spf":
                key = "spf.helo" if "smtp.helo" in rest and "smtp.mailfrom" not in rest else "spf"
            found[key] = result
    return found, text


def pyspf(sender, dns_port):
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_port
    dns.resolver.default_resolver = resolver
    result, _ = spf.check2(i=IP, s=sender, h=HELO)
    return result


def dkimpy_dns(keys):
    records = {f"{n}.".encode(): v[0][1].encode()
               for n, v in zone(keys).items() if n.startswith("s1._domainkey")}
    return lambda name, timeout=5: records.get(name)


SPF_CASES = [
    # (sender domain, yizhan's expected spf=, dmarc=, delivered?)
    ("pass.example", "pass", "pass", True),
    ("soft.example", "softfail", "fail", True),  # p=quarantine: delivered, marked
    ("neutral.example", "neutral", "none", True),
    ("none.example", "none", "none", True),
]


def test_spf_and_dmarc_verdicts_match_pyspf(server_factory, dns_zone):
    srv = checking_server(server_factory, dns_zone)
    for i, (domain, expected, dmarc, _) in enumerate(SPF_CASES, start=1):
        sender = f"someone@{domain}"
        send(srv, sender, message(domain, f"spf-{domain}"))
        found, text = results(delivered(srv, f"spf-{domain}", i))
        assert found["spf"] == expected, text
        assert found["spf"] == pyspf(sender, dns_zone.port), (domain, text)
        assert found["dmarc"] == dmarc, text
        assert f"smtp.mailfrom={sender}" in text, text
        assert "smtp.helo=client.test.example" in text, text
    header = delivered(srv, "spf-soft.example", len(SPF_CASES))
    # RFC 8601 5: our field above the trace line we add.
    assert header.index("Authentication-Results: mx.test.example") < header.index("Received: from")
    assert "X-Yizhan-Quarantine: DMARC policy quarantine of soft.example" in header, header
    assert "X-Spam-Flag: YES" in header
    assert "X-Yizhan-Quarantine" not in delivered(srv, "spf-pass.example", len(SPF_CASES))
    assert "DMARC quarantine: delivered marked" in srv.log()


def test_dmarc_reject_and_temperror_are_refused(server_factory, dns_zone):
    srv = checking_server(server_factory, dns_zone)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(srv, "ceo@fail.example", message("fail.example", "forged"))
    assert refused.value.smtp_code == 550, refused.value
    assert b"5.7.1" in refused.value.smtp_error and b"DMARC policy of fail.example" in \
        refused.value.smtp_error
    assert pyspf("ceo@fail.example", dns_zone.port) == "fail"
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        send(srv, "ceo@temp.example", message("temp.example", "temp"))
    assert deferred.value.smtp_code == 451, deferred.value
    assert b"4.7.1" in deferred.value.smtp_error
    assert pyspf("ceo@temp.example", dns_zone.port) == "temperror"
    assert srv.maildir("user@test.example") == []
    assert "message refused by the inbound checks" in srv.log()


def test_spf_reject_fail_refuses_at_mail(server_factory, dns_zone):
    srv = checking_server(server_factory, dns_zone, 'spf = "reject-fail"\ndmarc = "tag"')
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(srv, "ceo@fail.example", message("fail.example", "x"))
    assert refused.value.smtp_code == 550 and b"5.7.23" in refused.value.smtp_error
    with pytest.raises(smtplib.SMTPSenderRefused) as deferred:
        send(srv, "ceo@temp.example", message("temp.example", "y"))
    assert deferred.value.smtp_code == 451 and b"4.7.24" in deferred.value.smtp_error
    # softfail is not fail: accepted, tagged.
    send(srv, "x@soft.example", message("soft.example", "soft"))
    found, _ = results(delivered(srv, "soft", 1))
    assert found["spf"] == "softfail" and found["dmarc"] == "fail"


def test_dkim_verdicts_match_dkimpy_and_align_for_dmarc(server_factory, dns_zone, keys):
    srv = checking_server(server_factory, dns_zone)
    unsigned = message("signed.example", "dkim-ok")
    signature = dkim.sign(unsigned, b"s1", b"signed.example", keys["signed"][0],
                          include_headers=[b"From", b"To", b"Subject", b"Message-ID"])
    signed = signature + unsigned
    assert dkim.verify(signed, dnsfunc=dkimpy_dns(keys))
    # SPF fails for signed.example, but its aligned DKIM signature passes DMARC (p=reject).
    send(srv, "bounce@signed.example", signed)
    found, text = results(delivered(srv, "dkim-ok", 1))
    assert (found["dkim"], found["spf"], found["dmarc"]) == ("pass", "fail", "pass"), text
    assert "header.d=signed.example" in text or "header.i=@signed.example" in text, text

    tampered = signed.replace(b"Hello from", b"Hallo from")
    assert not dkim.verify(tampered, dnsfunc=dkimpy_dns(keys))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(srv, "bounce@signed.example", tampered)
    assert refused.value.smtp_code == 550, refused.value


def test_arc_chain_is_validated(server_factory, dns_zone, keys):
    srv = checking_server(server_factory, dns_zone, 'dmarc = "tag"')
    original = message("none.example", "arc-sealed",
                       "Authentication-Results: relay.arc.example; spf=pass "
                       "smtp.mailfrom=someone@none.example\r\n")
    sealed = b"".join(dkim.arc_sign(original, b"s1", b"arc.example", keys["arc"][0],
                                    b"relay.arc.example")) + original
    send(srv, "someone@none.example", sealed)
    found, text = results(delivered(srv, "arc-sealed", 1))
    assert found["arc"] == "pass", text
    send(srv, "someone@none.example", message("none.example", "arc-none"))
    found, text = results(delivered(srv, "arc-none", 2))
    assert found["arc"] == "none", text


def test_forged_results_with_our_name_are_removed(server_factory, dns_zone):
    srv = checking_server(server_factory, dns_zone)
    forged = message("none.example", "forged-ar",
                     "Authentication-Results: mx.test.example; dkim=pass header.d=bank.example;\r\n"
                     "\tdmarc=pass header.from=bank.example\r\n"
                     "Authentication-Results: other.example; spf=fail\r\n")
    send(srv, "someone@none.example", forged)
    header = delivered(srv, "forged-ar", 1)
    found, text = results(header)  # exactly one of ours
    assert "bank.example" not in text, text
    assert "Authentication-Results: other.example; spf=fail" in header
    assert "removed Authentication-Results fields forged with our name" in srv.log()


def test_this_host_and_our_users_are_not_checked(server_factory, dns_zone):
    """Not checked, but a forged field under our name is removed from their mail too."""
    extra = f'[delivery]\ndns_servers = ["127.0.0.1:{dns_zone.port}"]\n'
    srv = server_factory(extra=extra)
    send(srv, "ceo@fail.example", message("fail.example", "local",
                                          "Authentication-Results: mx.test.example; dmarc=pass\r\n"
                                          "Authentication-Results: other.example; spf=none\r\n"))
    header = delivered(srv, "local", 1)
    assert "Authentication-Results: mx.test.example" not in header, header
    assert "Authentication-Results: other.example; spf=none" in header, header
    assert dns_zone.queries == [], dns_zone.queries


def test_a_from_with_several_domains_is_refused(server_factory, dns_zone):
    """mail-auth cannot evaluate DMARC for `From: a@x, b@y`; under enforce it is refused
    (RFC 7489 6.6.1), else `From: ceo@fail.example, me@pass.example` would slip past p=reject."""
    srv = checking_server(server_factory, dns_zone)
    forged = (b"From: ceo@fail.example, me@pass.example\r\nTo: <user@test.example>\r\n"
              b"Subject: two\r\n\r\nx\r\n")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(srv, "me@pass.example", forged)
    assert refused.value.smtp_code == 550, refused.value
    assert b"several domains (fail.example, pass.example)" in refused.value.smtp_error


def test_held_memory_is_bounded(server_factory, dns_zone):
    """`[smtp] max_held_bytes`: a message to be checked that would take more memory than the
    budget is answered 451 (try later), never passed unchecked; a small one still is checked."""
    srv = checking_server(server_factory, dns_zone, smtp={"max_held_bytes": "4KiB"})
    big = message("pass.example", "big", "X-Pad: " + "x" * 60 + "\r\n") + b"y" * 20000 + b"\r\n"
    with pytest.raises(smtplib.SMTPDataError) as busy:
        send(srv, "someone@pass.example", big)
    assert busy.value.smtp_code == 451 and b"4.3.2" in busy.value.smtp_error, busy.value
    assert "too much message data held for checking" in srv.log()
    send(srv, "someone@pass.example", message("pass.example", "small"))
    found, _ = results(delivered(srv, "small", 1))
    assert found["spf"] == "pass"
