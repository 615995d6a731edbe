"""Durability (tier T5, DESIGN.md invariants 1-2): kill -9 the server around the 250 and restart.

- Every message answered 250 is delivered, in full, after any number of crashes.
- No partial message ever appears in a Maildir (new/ or cur/); a message that was never
  acknowledged may or may not be delivered, but only complete.
- Exactly once: each Maildir file is named after its queue id and recipient and linked into
  new/ only if that name is absent (`Maildir::deliver_once`), so a crash between the delivery
  and the spool's record of it does not deliver again after restart. The last test forces
  exactly that window.

The random test takes its seed from `YIZHAN_E2E_SEED` (else the clock) and prints it on failure.
"""

import os
import random
import re
import signal
import sqlite3
import time

import pytest

from conftest import Server, on_disk, split_delivery, wait_until

SENDER = "sender@client.example"
RCPTS = ("user@test.example", "user2@test.example")
#: How many copies of one message in one mailbox are tolerated: exactly once.
MAX_COPIES = 1


def make_message(tag: str, size: int) -> bytes:
    """A message with a unique Subject and a body of about `size` octets derived from the tag,
    with dot lines so that unstuffing is exercised on the way."""
    head = f"Subject: durable {tag}\r\nMessage-ID: <{tag}@client.example>\r\n\r\n".encode()
    lines = []
    n = 0
    i = 0
    while n < size:
        line = (b"." if i % 7 == 0 else b"") + f"{tag} line {i:06d} ".encode() + b"x" * (i % 50) + b"\r\n"
        lines.append(line)
        n += len(line)
        i += 1
    return head + b"".join(lines)


def stuff(message: bytes) -> bytes:
    """RFC 5321 4.5.2 dot-stuffing (the message already ends with CRLF)."""
    return b"".join((b"." + l if l.startswith(b".") else l) for l in message.splitlines(keepends=True))


SUBJECT = re.compile(rb"^Subject: durable (\S+)$", re.M)


def inventory(srv: Server, sent: dict[str, bytes]) -> dict[tuple[str, str], int]:
    """Checks every delivered file is a complete known message; counts (tag, mailbox)."""
    counts: dict[tuple[str, str], int] = {}
    for path in srv.all_delivered():
        data = path.read_bytes()
        rp, _received, rest = split_delivery(data)
        assert rp == f"Return-Path: <{SENDER}>\n".encode(), (path, rp)
        m = SUBJECT.search(rest)
        assert m, f"{path}: no known Subject in {rest[:200]!r}"
        tag = m.group(1).decode()
        assert tag in sent, f"{path}: unknown message {tag}"
        assert rest == on_disk(sent[tag]), f"{path}: partial or altered message {tag} ({len(rest)} of {len(on_disk(sent[tag]))} octets)"
        box = path.parent.parent.name + "@" + path.parent.parent.parent.name
        counts[(tag, box)] = counts.get((tag, box), 0) + 1
    return counts


def send_one(srv: Server, tag: str, message: bytes, rcpts) -> None:
    c = srv.raw()
    try:
        c.expect("EHLO client.test.example", 250)
        c.send(f"MAIL FROM:<{SENDER}>\r\n".encode()
               + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts).encode() + b"DATA\r\n")
        codes = [c.reply()[0] for _ in range(len(rcpts) + 2)]
        assert codes == [250] * (len(rcpts) + 1) + [354], codes
        c.send(stuff(message) + b".\r\n")
        code, lines = c.reply()
        assert code == 250, (tag, lines)
    finally:
        c.close()


def wait_settled(srv: Server, sent, acked) -> dict:
    """Waits until every acknowledged message is in every mailbox and the spool is empty."""
    def settled():
        counts = inventory(srv, sent)
        done = all(counts.get((tag, r), 0) >= 1 for tag, rcpts in acked.items() for r in rcpts)
        return counts if done and srv.spool_empty() else None
    return wait_until(settled, 30, "every acknowledged message delivered and an empty spool")


def test_kill_9_right_after_each_250(server_factory):
    """Send N messages; after each 250, kill -9 at once and restart."""
    srv = server_factory()
    n = 50
    sent: dict[str, bytes] = {}
    acked: dict[str, tuple[str, ...]] = {}
    for i in range(n):
        tag = f"k{i:03d}"
        rcpts = RCPTS if i % 3 == 0 else RCPTS[i % 2:i % 2 + 1]
        sent[tag] = make_message(tag, 500 + (i * 7919) % 60000)
        send_one(srv, tag, sent[tag], rcpts)
        acked[tag] = rcpts
        srv.kill()  # SIGKILL right after the 250 was read
        srv.start()
    counts = wait_settled(srv, sent, acked)
    assert set(counts) == {(tag, r) for tag, rcpts in acked.items() for r in rcpts}
    dups = {k: v for k, v in counts.items() if v != 1}
    print(f"{len(counts)} deliveries, duplicated: {dups}")
    assert all(1 <= v <= MAX_COPIES for v in counts.values()), dups


def test_kill_9_at_random_points(server_factory):
    """Kill -9 at random byte offsets of the DATA stream (often inside the final CRLF.CRLF),
    or a few milliseconds after the final dot, or after the 250; restart every time."""
    seed = int(os.environ.get("YIZHAN_E2E_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    srv = server_factory()
    rounds = 40
    sent: dict[str, bytes] = {}
    acked: dict[str, tuple[str, ...]] = {}
    rcpts_of: dict[str, tuple[str, ...]] = {}
    for i in range(rounds):
        tag = f"r{i:03d}-{seed}"
        rcpts = RCPTS if i % 2 else RCPTS[:1]
        message = make_message(tag, rng.randrange(200, 200_000))
        sent[tag] = message
        rcpts_of[tag] = rcpts
        wire = stuff(message) + b".\r\n"
        mode = rng.choice(["offset", "tail", "after-dot", "after-250"])
        if mode == "offset":
            cut = rng.randrange(0, len(wire))
        elif mode == "tail":
            cut = len(wire) - rng.randrange(1, 6)  # inside or just before "\r\n.\r\n"
        else:
            cut = len(wire)
        c = srv.raw()
        c.expect("EHLO client.test.example", 250)
        c.expect(f"MAIL FROM:<{SENDER}>", 250)
        for r in rcpts:
            c.expect(f"RCPT TO:<{r}>", 250)
        c.expect("DATA", 354)
        try:
            c.send(wire[:cut])
            if mode == "after-dot":
                time.sleep(rng.random() * 0.03)  # somewhere in the commit, fsync or reply
            elif mode == "after-250":
                code, lines = c.reply()
                assert code == 250, lines
                acked[tag] = rcpts
        finally:
            srv.kill()
            c.close()
        srv.start()
    try:
        counts = wait_settled(srv, sent, acked)
        for (tag, box), k in counts.items():
            assert 1 <= k <= MAX_COPIES, f"{tag} delivered {k} times to {box}"
            assert box in rcpts_of[tag], f"{tag} delivered to {box}, not a recipient"
        # Visible in the log when run with -s or on failure: how many were delivered unasked.
        unacked = {tag for tag, _ in counts} - set(acked)
        print(f"seed {seed}: {len(acked)} acknowledged, {len(unacked)} unacknowledged delivered")
    except BaseException as e:
        raise AssertionError(f"failed with YIZHAN_E2E_SEED={seed}: {e}") from e



def test_crash_between_maildir_rename_and_spool_record_does_not_duplicate(server_factory):
    """Fault injection: the test holds the spool's SQLite write lock while the runner delivers,
    so the runner renames the file into new/ and then waits to record it; kill -9 there."""
    srv = server_factory()
    index = srv.data_dir / "spool" / "index.sqlite"
    message = make_message("crash-window", 3000)
    sent = {"crash-window": message}
    # Freeze the server the moment the 250 is read, before the runner (woken after the commit)
    # gets far; if it already delivered, try again with a fresh server (bounded).
    for attempt in range(10):
        send_one(srv, "crash-window", message, RCPTS[:1])
        srv.signal(signal.SIGSTOP)
        if not srv.maildir("user@test.example") and not srv.spool_empty():
            break
        srv.signal(signal.SIGCONT)
        srv.kill()
        srv = server_factory()
        index = srv.data_dir / "spool" / "index.sqlite"
    else:
        pytest.skip("could not stop the server before its first delivery")
    lock = sqlite3.connect(index, isolation_level=None, timeout=5)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the spool's writer now waits (busy timeout)
        srv.signal(signal.SIGCONT)
        srv.wait_mail("user@test.example", 1)  # renamed into new/, not yet recorded
        srv.kill()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    srv.start()
    counts = wait_settled(srv, sent, {"crash-window": RCPTS[:1]})
    assert counts == {("crash-window", "user@test.example"): 1}
