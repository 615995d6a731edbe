//! SMTP dialogues out of a packet capture (pcap or pcapng, read with `pcap-parser`; Ethernet,
//! Linux cooked, raw IP and BSD loopback frames sliced with `etherparse`): every TCP
//! connection to an SMTP port, each direction put back in order by sequence number
//! (retransmissions dropped, segments out of order held until the gap fills), then cut into
//! lines in the order the bytes arrived. Once TLS starts (after the `220` to STARTTLS, or from
//! the first byte on an implicit-TLS port) the rest is counted, not read: "encrypted, N octets".

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_parser::{Linktype, PcapBlockOwned, PcapError, create_reader, pcapng::Block};

use crate::transcript::{Direction, Line};

/// The ports taken for SMTP unless told otherwise.
pub const SMTP_PORTS: [u16; 4] = [25, 465, 587, 2525];

/// The port of implicit TLS (RFC 8314).
const IMPLICIT_TLS: u16 = 465;

/// One TCP connection's dialogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The client's address.
    pub client: SocketAddr,
    /// The server's address.
    pub server: SocketAddr,
    /// Its lines, in order.
    pub lines: Vec<Line>,
}

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the capture: {0}")]
pub struct CaptureError(String);

/// Whether `bytes` start like a pcap or pcapng file.
pub fn is_capture(bytes: &[u8]) -> bool {
    const MAGIC: [[u8; 4]; 5] = [
        [0xd4, 0xc3, 0xb2, 0xa1],
        [0xa1, 0xb2, 0xc3, 0xd4],
        [0x4d, 0x3c, 0xb2, 0xa1],
        [0xa1, 0xb2, 0x3c, 0x4d],
        [0x0a, 0x0d, 0x0d, 0x0a],
    ];
    bytes.len() >= 4 && MAGIC.iter().any(|m| bytes[..4] == m[..])
}

/// The SMTP conversations in a capture, in the order they began.
pub fn read(bytes: &[u8], ports: &[u16]) -> Result<Vec<Conversation>, CaptureError> {
    let mut flows = Flows::default();
    for (linktype, frame) in frames(bytes)? {
        if let Some(segment) = segment(linktype, &frame) {
            flows.add(segment, ports);
        }
    }
    Ok(flows.finish())
}

/// Every frame of the capture with its link type.
fn frames(bytes: &[u8]) -> Result<Vec<(Linktype, Vec<u8>)>, CaptureError> {
    // The whole file is in memory: a buffer its size holds any block (loopback captures have
    // frames of 64 KiB and more).
    let capacity = bytes.len().max(65536);
    let mut reader = create_reader(capacity, bytes).map_err(|e| CaptureError(e.to_string()))?;
    let mut out = Vec::new();
    let mut interfaces: Vec<Linktype> = Vec::new();
    let mut legacy = Linktype::ETHERNET;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => legacy = h.network,
                    PcapBlockOwned::Legacy(b) => out.push((legacy, b.data.to_vec())),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(idb.linktype);
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let link = interfaces
                            .get(epb.if_id as usize)
                            .copied()
                            .unwrap_or(Linktype::ETHERNET);
                        out.push((link, epb.data.to_vec()));
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        let link = interfaces.first().copied().unwrap_or(Linktype::ETHERNET);
                        out.push((link, spb.data.to_vec()));
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
            }
            // A capture cut short (tcpdump killed) still gives what it holds.
            Err(PcapError::Eof | PcapError::UnexpectedEof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.refill().is_err() {
                    break;
                }
            }
            Err(e) => return Err(CaptureError(e.to_string())),
        }
    }
    Ok(out)
}

/// A TCP segment: who sent it to whom, its sequence number and payload.
struct Segment {
    from: SocketAddr,
    to: SocketAddr,
    seq: u32,
    syn: bool,
    payload: Vec<u8>,
}

fn segment(linktype: Linktype, frame: &[u8]) -> Option<Segment> {
    let sliced = match linktype {
        Linktype::ETHERNET => SlicedPacket::from_ethernet(frame).ok()?,
        Linktype::LINUX_SLL => SlicedPacket::from_linux_sll(frame).ok()?,
        // BSD loopback: a 4-byte address family, then IP.
        Linktype::NULL | Linktype::LOOP => SlicedPacket::from_ip(frame.get(4..)?).ok()?,
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => SlicedPacket::from_ip(frame).ok()?,
        // Linux cooked v2: a 20-byte header, then IP.
        Linktype::LINUX_SLL2 => SlicedPacket::from_ip(frame.get(20..)?).ok()?,
        _ => return None,
    };
    let (src, dst): (IpAddr, IpAddr) = match sliced.net? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Arp(_) => return None,
    };
    let TransportSlice::Tcp(tcp) = sliced.transport? else {
        return None;
    };
    Some(Segment {
        from: SocketAddr::new(src, tcp.source_port()),
        to: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        payload: tcp.payload().to_vec(),
    })
}

/// One direction of a connection, put back in order.
#[derive(Default)]
struct Stream {
    /// The next sequence number expected (set by the SYN, or the first segment seen).
    next: Option<u32>,
    /// Segments ahead of `next`.
    ahead: BTreeMap<u32, Vec<u8>>,
    /// Bytes of the line being read.
    partial: Vec<u8>,
}

impl Stream {
    /// Takes a segment; returns the bytes that became contiguous.
    fn take(&mut self, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
        if syn {
            self.next = Some(seq.wrapping_add(1));
            return Vec::new();
        }
        let next = *self.next.get_or_insert(seq);
        if payload.is_empty() {
            return Vec::new();
        }
        // How far past `next` the segment starts (a retransmission is "behind": negative).
        let offset = seq.wrapping_sub(next) as i32;
        if offset > 0 {
            self.ahead.insert(seq, payload.to_vec());
            return Vec::new();
        }
        let skip = offset.unsigned_abs() as usize;
        let mut out = payload.get(skip..).unwrap_or_default().to_vec();
        let mut next = next.wrapping_add(out.len() as u32);
        // Held segments that now start at or before `next` (boundaries need not match):
        // their new part is taken, the rest dropped.
        while let Some(&seq) = self
            .ahead
            .keys()
            .find(|&&seq| next.wrapping_sub(seq) as i32 >= 0)
        {
            let data = self.ahead.remove(&seq).unwrap_or_default();
            let skip = next.wrapping_sub(seq) as usize;
            if let Some(new) = data.get(skip..) {
                out.extend_from_slice(new);
                next = next.wrapping_add(new.len() as u32);
            }
        }
        self.next = Some(next);
        out
    }
}

/// One connection being read.
struct Flow {
    client: SocketAddr,
    server: SocketAddr,
    to_server: Stream,
    to_client: Stream,
    lines: Vec<Line>,
    /// TLS began: bytes from here on are counted, not read.
    encrypted: Option<u64>,
    /// The last client command was STARTTLS.
    starttls_asked: bool,
}

#[derive(Default)]
struct Flows {
    flows: Vec<Flow>,
    index: HashMap<(SocketAddr, SocketAddr), usize>,
}

impl Flows {
    fn add(&mut self, s: Segment, ports: &[u16]) {
        let (client, server, direction) = if ports.contains(&s.to.port()) {
            (s.from, s.to, Direction::Client)
        } else if ports.contains(&s.from.port()) {
            (s.to, s.from, Direction::Server)
        } else {
            return;
        };
        // A new connection from the same client port (a SYN): a new conversation.
        if s.syn && direction == Direction::Client {
            self.index.remove(&(client, server));
        }
        let i = *self.index.entry((client, server)).or_insert_with(|| {
            self.flows.push(Flow {
                client,
                server,
                to_server: Stream::default(),
                to_client: Stream::default(),
                lines: Vec::new(),
                encrypted: (server.port() == IMPLICIT_TLS).then_some(0),
                starttls_asked: false,
            });
            self.flows.len() - 1
        });
        let flow = &mut self.flows[i];
        let stream = match direction {
            Direction::Client => &mut flow.to_server,
            _ => &mut flow.to_client,
        };
        let bytes = stream.take(s.seq, s.syn, &s.payload);
        flow.feed(direction, &bytes);
    }

    fn finish(self) -> Vec<Conversation> {
        self.flows
            .into_iter()
            .map(|mut f| {
                if let Some(octets) = f.encrypted.filter(|n| *n > 0) {
                    f.lines.push(Line {
                        direction: Direction::Note,
                        text: format!("encrypted, {octets} octets (TLS)"),
                        tls: true,
                        bare_lf: false,
                    });
                }
                Conversation {
                    client: f.client,
                    server: f.server,
                    lines: f.lines,
                }
            })
            .collect()
    }
}

impl Flow {
    /// Bytes that became contiguous in one direction: cut into lines, or counted once TLS began.
    fn feed(&mut self, direction: Direction, bytes: &[u8]) {
        if let Some(octets) = self.encrypted.as_mut() {
            *octets += bytes.len() as u64;
            return;
        }
        let stream = match direction {
            Direction::Client => &mut self.to_server,
            _ => &mut self.to_client,
        };
        // Only the new bytes are searched, and the buffer drained once: a long run without a
        // line end costs linear time.
        let searched = stream.partial.len();
        stream.partial.extend_from_slice(bytes);
        let mut complete = Vec::new();
        let mut start = 0;
        let ends: Vec<usize> = stream.partial[searched..]
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| searched + i)
            .collect();
        for end in ends {
            let line = &stream.partial[start..end];
            start = end + 1;
            let bare_lf = !line.ends_with(b"\r");
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            complete.push((String::from_utf8_lossy(line).into_owned(), bare_lf));
        }
        stream.partial.drain(..start);
        for (text, bare_lf) in complete {
            let starts_tls =
                direction == Direction::Server && self.starttls_asked && text.starts_with("220");
            if direction == Direction::Client {
                self.starttls_asked = text.eq_ignore_ascii_case("STARTTLS");
            }
            self.lines.push(Line {
                direction,
                text,
                tls: false,
                bare_lf,
            });
            if starts_tls {
                self.lines.push(Line {
                    direction: Direction::Note,
                    text: "TLS established (STARTTLS)".into(),
                    tls: true,
                    bare_lf: false,
                });
                self.encrypted = Some(0);
                // What followed the 220 in the same segment is already TLS.
                let rest = std::mem::take(&mut self.to_client.partial).len()
                    + std::mem::take(&mut self.to_server.partial).len();
                self.encrypted = Some(rest as u64);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_put_back_in_order() {
        let mut s = Stream::default();
        assert!(s.take(100, true, b"").is_empty());
        assert_eq!(s.take(101, false, b"ab"), b"ab");
        // Out of order: held, then released with the gap.
        assert!(s.take(105, false, b"ef").is_empty());
        assert_eq!(s.take(103, false, b"cd"), b"cdef");
        // A retransmission of what was read, and one overlapping the end.
        assert!(s.take(101, false, b"ab").is_empty());
        assert_eq!(s.take(106, false, b"fgh"), b"gh");
        // Held segments whose boundaries do not match what fills the gap.
        assert!(s.take(113, false, b"mnop").is_empty());
        assert_eq!(s.take(109, false, b"ijklm"), b"ijklmnop");
        // Sequence numbers wrap.
        let mut w = Stream::default();
        w.take(u32::MAX, true, b"");
        assert_eq!(w.take(0, false, b"x"), b"x");
        assert_eq!(w.take(1, false, b"y"), b"y");
    }

    #[test]
    fn a_bare_lf_in_the_message_text_is_flagged() {
        let mut f = Flow {
            client: "127.0.0.1:40000".parse().unwrap(),
            server: "127.0.0.1:25".parse().unwrap(),
            to_server: Stream::default(),
            to_client: Stream::default(),
            lines: Vec::new(),
            encrypted: None,
            starttls_asked: false,
        };
        f.feed(Direction::Server, b"220 mx\r\n");
        f.feed(Direction::Client, b"MAIL FROM:<a@b>\r\n");
        f.feed(Direction::Server, b"250 ok\r\n");
        f.feed(Direction::Client, b"RCPT TO:<c@d>\r\n");
        f.feed(Direction::Server, b"250 ok\r\n");
        f.feed(Direction::Client, b"DATA\r\n");
        f.feed(Direction::Server, b"354 go\r\n");
        // The smuggling classic: "\n.\n" inside the text.
        f.feed(
            Direction::Client,
            b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<x@y>\r\n.\r\n",
        );
        let bare: Vec<&str> = f
            .lines
            .iter()
            .filter(|l| l.bare_lf)
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(bare, ["hi", "."]);
        let cat = crate::Catalogue::load(crate::Lang::En).unwrap();
        let e = crate::explain(&f.lines, &cat);
        let keys: Vec<&str> = e.findings.iter().map(|x| x.key.as_str()).collect();
        assert!(keys.contains(&"bare_lf"), "{keys:?}");
        let mut clean = f.lines.clone();
        for l in &mut clean {
            l.bare_lf = false;
        }
        let e = crate::explain(&clean, &cat);
        assert!(e.findings.iter().all(|x| x.key != "bare_lf"));
    }

    #[test]
    fn captures_are_recognised() {
        assert!(is_capture(&[0x0a, 0x0d, 0x0d, 0x0a, 0]));
        assert!(is_capture(&[0xd4, 0xc3, 0xb2, 0xa1]));
        assert!(!is_capture(b"S: 220"));
    }
}
