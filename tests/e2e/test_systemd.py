"""systemd Type=notify (dist/yizhan.service): READY=1 once the listeners are bound (and, as
root, privileges dropped), RELOADING=1 + MONOTONIC_USEC then READY=1 around a SIGHUP reload,
STOPPING=1 on SIGTERM. The test plays systemd's notification socket."""

import os
import socket

from conftest import wait_until


def test_readiness_reload_and_stop_are_notified(server_factory, tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o666)  # the server sends after dropping to its account
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    srv = server_factory()
    assert sock.recv(4096).decode() == "READY=1\n"
    # Ready means ready: a client is served at once.
    with srv.smtp() as s:
        assert s.noop()[0] == 250
    srv.signal(__import__("signal").SIGHUP)
    reloading = sock.recv(4096).decode()
    assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC="), reloading
    assert sock.recv(4096).decode() == "READY=1\n"
    assert srv.stop() == 0
    assert sock.recv(4096).decode() == "STOPPING=1\n"
    wait_until(lambda: not srv.running() or None, 10, "the server to exit")
