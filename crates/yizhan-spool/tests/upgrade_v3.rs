//! A spool written by the schema-3 release (tests/fixtures/spool-v3, see its README) opens
//! with today's code: every row is upgraded to typed envelopes, nothing is moved aside, every
//! body reads back whole.

use std::io::Read;
use std::path::Path;

use yizhan_proto::address::{ForwardPath, ReversePath};
use yizhan_proto::command::{Body, Notify, Ret};
use yizhan_spool::{Origin, RecipientStatus, Spool};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_schema_3_spool_is_upgraded_and_every_message_kept() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spool-v3");
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    copy_dir(&fixture, &spool_dir);

    let (spool, recovery) = Spool::open(&spool_dir).unwrap();
    assert_eq!(recovery.messages, 3, "{recovery:?}");
    assert_eq!(recovery.corrupt, 0, "{recovery:?}");
    let mut messages = spool.list().unwrap();
    messages.sort_by_key(|e| e.received_at);
    let [first, report, utf8] = &messages[..] else {
        panic!("{messages:?}")
    };

    assert_eq!(
        first.reverse_path,
        "<@relay.example:alice@example.org>"
            .parse::<ReversePath>()
            .unwrap()
    );
    assert_eq!(first.envid.as_deref(), Some("ENV-1"));
    assert_eq!(first.ret, Some(Ret::Hdrs));
    assert_eq!(first.body, Some(Body::EightBitMime));
    // The client, typed: HELO, address, authenticated user.
    assert_eq!(
        first.client.helo.as_ref().unwrap().to_string(),
        "client.example.org"
    );
    assert_eq!(
        first.client.origin,
        Origin::Network {
            address: "192.0.2.7:41000".parse().unwrap()
        }
    );
    assert_eq!(
        first.client.auth_user.as_ref().unwrap().to_string(),
        "alice@example.org"
    );
    let [bob, carol, dave] = &first.recipients[..] else {
        panic!()
    };
    assert_eq!(bob.address.to_string(), "bob@test.example");
    assert_eq!(
        bob.original,
        "<list@test.example>".parse::<ForwardPath>().unwrap()
    );
    assert_eq!(bob.mailbox.as_ref().unwrap().local, "bob");
    assert_eq!(bob.notify.unwrap().to_string(), "SUCCESS,FAILURE");
    let orcpt = bob.orcpt.as_ref().unwrap();
    assert_eq!(
        (orcpt.addr_type.as_str(), orcpt.addr.as_str()),
        ("rfc822", "list@test.example")
    );
    assert_eq!((carol.attempts, carol.notify), (2, Some(Notify::Never)));
    assert!(carol.last_error.as_deref().unwrap().contains("451"));
    assert_eq!(
        dave.original,
        "<@relay.example:dave@far.example>"
            .parse::<ForwardPath>()
            .unwrap()
    );
    assert!(matches!(dave.status, RecipientStatus::Delivered { .. }));

    assert_eq!(report.reverse_path, ReversePath::Null);
    assert_eq!(report.client.origin, Origin::Local { uid: None });
    assert!(report.held);

    assert!(utf8.smtputf8);
    assert_eq!(utf8.reverse_path.to_string(), "<用户@例子.example>");
    assert_eq!(utf8.recipients[0].address.to_string(), "δοκιμή@far.example");
    assert_eq!(
        utf8.recipients[0].orcpt.as_ref().unwrap().addr_type,
        "utf-8"
    );

    for envelope in &messages {
        let mut body = Vec::new();
        spool
            .open_body(&envelope.id)
            .unwrap()
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(body.len() as u64, envelope.size, "{}", envelope.id);
    }
    // Reopened: already schema 4, nothing to do, same messages.
    drop(spool);
    let (spool, recovery) = Spool::open(&spool_dir).unwrap();
    assert_eq!((recovery.messages, recovery.corrupt), (3, 0));
    assert_eq!(spool.list().unwrap().len(), 3);
}
