"""Least privilege (issue #13): started as root, `yizhan serve` binds, reads its keys, gives
the data directory to the service account and drops every privilege; a missing account, a
root account or a data directory the account cannot reach stop it with a clear message."""

import os
import pwd
import subprocess

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


def ids(pid: int) -> dict[str, list[int]]:
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups", "CapEff"):
                out[key] = value.split()
    return out


def test_root_start_runs_as_the_service_account(server_factory):
    srv = server_factory()
    account = pwd.getpwnam("yizhan")
    status = ids(srv.proc.pid)
    assert status["Uid"] == [str(account.pw_uid)] * 4, status  # real, effective, saved, fs
    assert status["Gid"] == [str(account.pw_gid)] * 4, status
    assert status["Groups"] == [str(account.pw_gid)], status
    assert int(status["CapEff"][0], 16) == 0, status
    assert "privileges dropped user=yizhan" in srv.log()
    with srv.smtp() as s:
        s.sendmail("sender@client.example", ["user@test.example"], b"Subject: x\r\n\r\nhi\r\n")
    [path] = srv.wait_mail("user@test.example")
    for p in (path, srv.data_dir, srv.data_dir / "spool" / "index.sqlite"):
        assert os.lstat(p).st_uid == account.pw_uid, p


def start_failure(server_factory, top: dict) -> str:
    srv = server_factory(top=top, start=False)
    out = subprocess.run([str(srv.binary), "serve", "--config", str(srv.config)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0, out
    assert not srv.data_dir.exists(), "a failed start leaves nothing behind"
    return out.stderr


def test_a_missing_account_is_refused_with_the_command_to_make_it(server_factory):
    err = start_failure(server_factory, {"user": "no-such-yizhan"})
    assert 'user "no-such-yizhan" does not exist' in err, err
    assert "useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin" in err, err


def test_root_is_refused_as_the_service_account(server_factory):
    err = start_failure(server_factory, {"user": "root"})
    assert "user" in err and "must not be root" in err, err


def test_a_data_directory_the_account_cannot_reach_is_refused(server_factory, tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(closed, 0o700)
    srv = server_factory(start=False)
    text = srv.config.read_text(encoding="utf-8")
    text = text.replace(f'data_dir = "{srv.data_dir}"', f'data_dir = "{closed}/data"', 1)
    srv.config.write_text(text, encoding="utf-8")
    out = subprocess.run([str(srv.binary), "serve", "--config", str(srv.config)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0, out
    assert f"user yizhan cannot reach the data directory {closed}/data" in out.stderr, out.stderr
    assert f"chmod o+x {closed}" in out.stderr, out.stderr


def test_check_config_says_what_serve_would_refuse(server_factory):
    srv = server_factory(top={"user": "no-such-yizhan"}, start=False)
    out = subprocess.run([str(srv.binary), "check-config", "--config", str(srv.config)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1, out
    assert 'user "no-such-yizhan" does not exist' in out.stderr, out.stderr
    assert "user: no-such-yizhan" in out.stdout, out.stdout
