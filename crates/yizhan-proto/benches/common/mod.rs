//! Workloads shared by the criterion benchmarks (`proto.rs`, wall-clock time) and the callgrind
//! benchmarks (`proto_instructions.rs`, instruction counts): the same inputs measured two ways.
//!
//! Each workload is a pure function of its input, so an instruction count is repeatable.

// Each bench target uses a different subset of these helpers.
#![allow(dead_code)]

use std::hint::black_box;

use yizhan_proto::Reply;
use yizhan_proto::command::Command;
use yizhan_proto::data::{DataEnd, DataReader};
use yizhan_proto::server::{Decision, Event, Question, ServerConfig, ServerSession};

/// Typical command lines of a mail transaction, without their CRLF.
pub const COMMANDS: &[(&str, &[u8])] = &[
    ("ehlo", b"EHLO client.example.org"),
    (
        "mail",
        b"MAIL FROM:<sender@client.example.org> SIZE=1024 BODY=8BITMIME",
    ),
    ("rcpt", b"RCPT TO:<user@bench.test>"),
    (
        "rcpt_dsn",
        b"RCPT TO:<user@bench.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user@bench.test",
    ),
    ("data", b"DATA"),
    ("quit", b"QUIT"),
];

/// Parses every line of [`COMMANDS`] once.
pub fn parse_commands() -> usize {
    let mut ok = 0;
    for (_, line) in COMMANDS {
        if Command::parse(black_box(line)).is_ok() {
            ok += 1;
        }
    }
    ok
}

/// A message of about `size` octets as it travels after DATA: headers, 78-character lines
/// with CRLF, some lines starting with a dot (dot-stuffed), and the CRLF.CRLF terminator.
pub fn wire_message(size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size + 200);
    m.extend_from_slice(
        b"From: <sender@client.example.org>\r\nTo: <user@bench.test>\r\n\
          Subject: benchmark\r\nMessage-Id: <1@client.example.org>\r\n\r\n",
    );
    let mut n = 0usize;
    while m.len() < size {
        if n % 16 == 15 {
            m.extend_from_slice(b"..a line that starts with a dot, stuffed by the client\r\n");
        } else {
            m.extend_from_slice(
                b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod te\r\n",
            );
        }
        n += 1;
    }
    m.extend_from_slice(b".\r\n");
    m
}

/// Reads a whole DATA section through [`DataReader`] in `chunk`-sized pieces (as a socket
/// would deliver it); returns the unstuffed size.
pub fn read_data(wire: &[u8], chunk: usize) -> u64 {
    let mut reader = DataReader::new(64 * 1024 * 1024);
    let mut out = Vec::with_capacity(chunk);
    for piece in wire.chunks(chunk) {
        let mut input = piece;
        while !input.is_empty() {
            let (used, end) = reader.read(input, &mut out);
            out.clear();
            input = &input[used..];
            if let Some(end) = end {
                assert_eq!(end, DataEnd::Complete);
                return reader.size();
            }
        }
    }
    reader.size()
}

/// The client side of one full session: EHLO, MAIL, RCPT, DATA, the message, QUIT,
/// pipelined as one buffer per step as a real client would send it.
pub fn session_script(message: &[u8]) -> Vec<Vec<u8>> {
    vec![
        b"EHLO client.example.org\r\n".to_vec(),
        b"MAIL FROM:<sender@client.example.org> SIZE=1024\r\nRCPT TO:<user@bench.test>\r\nDATA\r\n"
            .to_vec(),
        message.to_vec(),
        b"QUIT\r\n".to_vec(),
    ]
}

/// Runs one full session in memory, answering every question as the server would on the happy
/// path (accept; `250 queued` at the end of data). Returns the octets the server wrote.
pub fn run_session(script: &[Vec<u8>], chunk: usize) -> usize {
    let mut session = ServerSession::new(ServerConfig::default());
    let mut written = 0usize;
    let mut body = 0usize;
    let mut drive = |session: &mut ServerSession| {
        while let Some(event) = session.next_event() {
            match event {
                Event::Send(bytes) => written += bytes.len(),
                Event::Body(chunk) => body += chunk.len(),
                Event::Ask(Question::EndOfData { .. }) => session.decide(Decision::Reply(
                    Reply::new(250, None, "2.0.0 Ok: queued as 0195F0C0FFEE"),
                )),
                Event::Ask(_) => session.decide(Decision::Accept),
                Event::Close | Event::Turn | Event::StartTls => return,
                Event::DataAborted => panic!("benchmark message aborted"),
            }
        }
    };
    drive(&mut session);
    for step in script {
        for piece in step.chunks(chunk) {
            session.receive(piece);
            drive(&mut session);
        }
    }
    black_box(body);
    written
}
