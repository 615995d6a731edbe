//! The client session driven end to end as a driver would: every byte written to the server
//! (commands, dot-stuffed body, BDAT) compared with the expected transcript.
//! RFC 5321 4.5.2 (dot-stuffing), RFC 2920 (pipelining), RFC 3030 (BDAT).

use yizhan_proto::client::{
    ClientConfig, ClientEvent, ClientSession, TlsMode, Transaction, bdat_command,
};
use yizhan_proto::data::DotStuffer;
use yizhan_proto::{ForwardPath, Host, ReversePath};

/// Plays the server `turns` and returns everything the client wrote plus the Finished count.
fn drive(turns: &[&str], body: &[u8], binary: bool) -> (String, usize) {
    let mut config = ClientConfig::new(Host::parse("client.example").unwrap());
    config.tls = TlsMode::Never;
    let mut s = ClientSession::new(config);
    let mut wire = Vec::new();
    let mut sent = false;
    let mut finished = 0;
    let mut turns = turns.iter();
    loop {
        while let Some(ev) = s.next_event() {
            match ev {
                ClientEvent::Send(b) | ClientEvent::SendSecret(b) => wire.extend_from_slice(&b),
                ClientEvent::SendBody { bdat: false } => {
                    let mut stuffer = DotStuffer::new();
                    stuffer.stuff(body, &mut wire);
                    stuffer.finish(&mut wire);
                    s.body_sent();
                }
                ClientEvent::SendBody { bdat: true } => {
                    wire.extend_from_slice(&bdat_command(body.len() as u64));
                    wire.extend_from_slice(body);
                    s.body_sent();
                }
                ClientEvent::Ready if !sent => {
                    sent = true;
                    let mut tx = Transaction::new(
                        ReversePath::parse("<a@x.example>").unwrap(),
                        vec![ForwardPath::parse("<b@y.example>").unwrap()],
                        body.len() as u64,
                    );
                    tx.binary = binary;
                    s.send(tx).unwrap();
                }
                ClientEvent::Ready => s.quit(),
                ClientEvent::Finished(_) => finished += 1,
                ClientEvent::StartTls => panic!("no TLS here"),
                ClientEvent::Failed(e) => panic!("failed: {e}"),
                ClientEvent::Closed => return (String::from_utf8(wire).unwrap(), finished),
            }
        }
        s.receive(turns.next().expect("the client should be done").as_bytes());
    }
}

#[test]
fn client_data_body_is_dot_stuffed_and_terminated() {
    let (wire, finished) = drive(
        &[
            "220 mx.example\r\n",
            "250-mx.example\r\n250 PIPELINING\r\n",
            "250 ok\r\n250 ok\r\n354 go\r\n",
            "250 queued\r\n",
            "221 bye\r\n",
        ],
        b"Subject: hi\r\n\r\n.leading dot\r\nend",
        false,
    );
    assert_eq!(finished, 1);
    assert_eq!(
        wire,
        "EHLO client.example\r\n\
         MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n\
         Subject: hi\r\n\r\n..leading dot\r\nend\r\n.\r\n\
         QUIT\r\n"
    );
}

#[test]
fn client_binary_body_goes_raw_with_bdat() {
    let (wire, finished) = drive(
        &[
            "220 mx.example\r\n",
            "250-mx.example\r\n250-CHUNKING\r\n250 BINARYMIME\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "250 2.0.0 queued\r\n",
            "221 bye\r\n",
        ],
        b"raw\r\n.\r\nbytes",
        true,
    );
    assert_eq!(finished, 1);
    assert_eq!(
        wire,
        "EHLO client.example\r\n\
         MAIL FROM:<a@x.example> BODY=BINARYMIME\r\nRCPT TO:<b@y.example>\r\n\
         BDAT 13 LAST\r\nraw\r\n.\r\nbytes\
         QUIT\r\n"
    );
}
