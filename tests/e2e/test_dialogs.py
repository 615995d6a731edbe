"""The golden dialogues of tests/dialogs (tier T2): every `.dialog` not marked `! memory-only`,
sent over TCP to the real server running the sample configuration.

The format (crates/yizhan-testkit/src/dialog.rs is the reference; this is a second reader):

    # comment, blank lines          ignored
    ! memory-only                   directives, before the first step (TCP skips such files)
    C: EHLO client.test             a client line; CRLF is appended
    R: "BDAT 5 LAST\\r\\nHello"     raw client bytes; escapes \\r \\n \\t \\\\ \\" \\xNN
    S: 250 2.0.0 OK queued as {*}   the next server line exactly; {*} = one or more non-spaces
    S~ 250                          the next server line starts with this
    S* 250                          a whole reply with this code (any 250- lines, then 250 )

Server lines are matched in order; after the last step nothing more may arrive.
`YIZHAN_DIALOGS_DIR` overrides the directory (default: <repo>/tests/dialogs).
"""

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import IO_TIMEOUT, REPO

DIALOGS = Path(os.environ.get("YIZHAN_DIALOGS_DIR", REPO / "tests" / "dialogs"))
#: How long to listen for unexpected output after the last step.
QUIET_PERIOD = 0.3


@dataclass
class Dialog:
    memory_only: bool = False
    directives: list = field(default_factory=list)
    steps: list = field(default_factory=list)  # (line, kind, value): kind in C, S:, S~, S*


class DialogSyntaxError(Exception):
    pass


def unescape(text: str) -> bytes:
    text = text.strip()
    if not text.startswith('"'):
        raise DialogSyntaxError("R: needs a quoted string")
    out = bytearray()
    i = 1
    simple = {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\", '"': b'"'}
    while i < len(text):
        c = text[i]
        if c == '"':
            after = text[i + 1:].strip()
            if after and not after.startswith("#"):
                raise DialogSyntaxError(f"text after the closing quote: {after}")
            return bytes(out)
        if c == "\\":
            e = text[i + 1:i + 2]
            if e in simple:
                out += simple[e]
                i += 2
                continue
            if e == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
                continue
            raise DialogSyntaxError(f"unknown escape \\{e}")
        out += c.encode("utf-8")
        i += 1
    raise DialogSyntaxError("missing closing quote")


def parse(text: str) -> Dialog:
    d = Dialog()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            if line.startswith("!"):
                if d.steps:
                    raise DialogSyntaxError("directives must come before the first step")
                directive = line[1:].strip()
                if directive == "memory-only":
                    d.memory_only = True
                else:
                    d.directives.append(directive)
                continue
            tag, rest = line[:2], line[2:]
            if rest.startswith(" "):
                rest = rest[1:]
            if tag == "C:":
                d.steps.append((n, "C", rest.encode("utf-8") + b"\r\n"))
            elif tag == "R:":
                d.steps.append((n, "C", unescape(rest)))
            elif tag in ("S:", "S~"):
                d.steps.append((n, tag, rest))
            elif tag == "S*":
                code = int(rest.strip())
                if not 200 <= code < 600:
                    raise DialogSyntaxError(f"S* needs a reply code, got {rest!r}")
                d.steps.append((n, tag, str(code)))
            else:
                raise DialogSyntaxError(f"unknown line tag {tag!r}")
        except (DialogSyntaxError, ValueError) as e:
            raise DialogSyntaxError(f"line {n}: {e}") from None
    if d.directives and not d.memory_only:
        raise DialogSyntaxError("configuration directives need `! memory-only`")
    return d


def glob_match(pattern: str, text: str) -> bool:
    """`{*}` matches one or more non-space characters; everything else literally."""
    regex = "".join("[^ ]+" if part == "{*}" else re.escape(part)
                    for part in re.split(r"(\{\*\})", pattern))
    return re.fullmatch(regex, text, flags=re.S) is not None


class Lines:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.transcript: list[str] = []

    def next(self) -> str | None:
        """The next server line, or None at EOF."""
        for _ in range(100_000):
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                text = line.decode("utf-8", errors="backslashreplace")
                self.transcript.append(f"S: {text}")
                return text
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk
        raise AssertionError("server line too long")


def run(dialog: Dialog, port: int, name: str) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    lines = Lines(sock)

    def fail(n: int, expected: str, got: str):
        pytest.fail(f"{name}:{n}: expected `{expected}`, got {got}\n--- transcript ---\n"
                    + "\n".join(lines.transcript), pytrace=False)

    try:
        for n, kind, value in dialog.steps:
            if kind == "C":
                lines.transcript.append(f"C: {value!r}")
                try:
                    sock.sendall(value)
                except OSError as e:
                    fail(n, "an open connection", f"{e} (the client step cannot be sent)")
                continue
            for _ in range(1000):
                try:
                    got = lines.next()
                except socket.timeout:
                    fail(n, f"{kind} {value}", f"nothing within {IO_TIMEOUT}s")
                if got is None:
                    fail(n, f"{kind} {value}", "end of connection")
                if kind == "S:":
                    ok, more = glob_match(value, got), False
                elif kind == "S~":
                    ok, more = got.startswith(value), False
                else:
                    rest = got[3:] if got[:3] == value else None
                    more = rest is not None and rest.startswith("-")
                    ok = rest is not None and (rest == "" or rest.startswith(" "))
                if more:
                    continue
                if not ok:
                    fail(n, f"{kind} {value}", f"`{got}`")
                break
        # Nothing else may arrive: either the server closed, or it stays quiet.
        sock.settimeout(QUIET_PERIOD)
        try:
            extra = lines.next()
        except socket.timeout:
            extra = None
        if extra is not None:
            fail(len(dialog.steps), "nothing after the last step", f"`{extra}`")
    finally:
        sock.close()


def dialog_files() -> list:
    files = sorted(DIALOGS.glob("*.dialog")) if DIALOGS.is_dir() else []
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"no .dialog files in {DIALOGS} (they come with the h5-dialogs branch)"),
            id="no-dialogs")]
    return [pytest.param(f, id=f.stem) for f in files]


def test_dialog_reader_self_check():
    """The reader itself, so a dialogue that passes is not passing because of it."""
    d = parse('# c\n\nC: EHLO x\nR: "A\\r\\n\\x00\\"\\\\" # trailing\nS: 250 ok {*}\nS~ 2\nS* 354\n')
    assert d.steps == [(3, "C", b"EHLO x\r\n"), (4, "C", b'A\r\n\x00"\\'),
                       (5, "S:", "250 ok {*}"), (6, "S~", "2"), (7, "S*", "354")]
    assert glob_match("250 2.0.0 OK queued as {*}", "250 2.0.0 OK queued as 01a2")
    assert not glob_match("250 2.0.0 OK queued as {*}", "250 2.0.0 OK queued as ")
    assert not glob_match("250 2.0.0 OK queued as {*}", "250 2.0.0 OK queued as a b")
    assert not glob_match("250 OK", "250 OK ")
    with pytest.raises(DialogSyntaxError):
        parse("! max_recipients 2\nC: x\n")
    with pytest.raises(DialogSyntaxError):
        parse('R: "unterminated\n')


@pytest.mark.parametrize("path", dialog_files())
def test_dialog_over_tcp(server_factory, path):
    dialog = parse(path.read_text(encoding="utf-8"))
    if dialog.memory_only:
        pytest.skip("! memory-only")
    srv = server_factory()
    run(dialog, srv.port, path.name)
