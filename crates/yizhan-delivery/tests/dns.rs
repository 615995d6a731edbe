//! The hickory-backed resolver against a small in-process DNS server on 127.0.0.1 (no system
//! DNS, no internet): MX by preference, implicit MX (RFC 5321 5.1), null MX (RFC 7505),
//! NXDOMAIN (permanent) and SERVFAIL (transient).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use yizhan_delivery::mx::{
    self, DnsError, HickoryResolver, MxAnswer, MxError, Ourselves, Resolver,
};

/// Answers from a fixed table, the way chasquid's minidns does:
/// - `mx.test.`: MX 10 mx1.test., MX 20 mx2.test.; `mx1.test.`/`mx2.test.` have A records;
/// - `implicit.test.`: no MX, A 127.0.0.7;
/// - `nullmx.test.`: MX 0 . (RFC 7505);
/// - `servfail.test.`: SERVFAIL;
/// - anything else: NXDOMAIN.
fn answer(query: &Message) -> Message {
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_available = true;
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.authoritative = true;
    let Some(q) = query.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    response.add_query(q.clone());
    let name = q.name().to_ascii().to_ascii_lowercase();
    let a = |ip: [u8; 4]| RData::A(A(Ipv4Addr::from(ip)));
    let mx = |pref: u16, host: &str| RData::MX(MX::new(pref, Name::from_ascii(host).unwrap()));
    let records: Vec<RData> = match (name.as_str(), q.query_type()) {
        ("mx.test.", RecordType::MX) => vec![mx(20, "mx2.test."), mx(10, "mx1.test.")],
        ("mx1.test.", RecordType::A) => vec![a([127, 0, 0, 2])],
        ("mx2.test.", RecordType::A) => vec![a([127, 0, 0, 3])],
        ("implicit.test.", RecordType::A) => vec![a([127, 0, 0, 7])],
        ("nullmx.test.", RecordType::MX) => vec![mx(0, ".")],
        ("servfail.test.", _) => {
            response.metadata.response_code = ResponseCode::ServFail;
            return response;
        }
        ("mx.test." | "mx1.test." | "mx2.test." | "implicit.test." | "nullmx.test.", _) => vec![],
        _ => {
            response.metadata.response_code = ResponseCode::NXDomain;
            return response;
        }
    };
    for rdata in records {
        response.add_answer(Record::from_rdata(q.name().clone(), 60, rdata));
    }
    response
}

async fn start_dns() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            debug_assert_eq!(query.metadata.message_type, MessageType::Query);
            if let Ok(bytes) = answer(&query).to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn hickory_resolver_classifies_every_case() {
    let dns = start_dns().await;
    let resolver = HickoryResolver::with_servers(&[dns], Duration::from_secs(2)).unwrap();

    // RFC 5321 5.1: records by preference.
    let MxAnswer::Records(records) = resolver.mx("mx.test").await.unwrap() else {
        panic!("MX records expected");
    };
    assert_eq!(records.len(), 2);
    let targets = mx::targets(&resolver, "mx.test", 2525, 5, 1, &Ourselves::default())
        .await
        .unwrap();
    let addrs: Vec<String> = targets.iter().map(|t| t.address.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.2:2525", "127.0.0.3:2525"]);
    assert_eq!(targets[0].host, "mx1.test");

    // RFC 5321 5.1: no MX, so the domain's own address (implicit MX).
    assert_eq!(resolver.mx("implicit.test").await, Ok(MxAnswer::NoRecords));
    let targets = mx::targets(&resolver, "implicit.test", 25, 5, 1, &Ourselves::default())
        .await
        .unwrap();
    assert_eq!(targets[0].address.ip(), IpAddr::from([127, 0, 0, 7]));

    // RFC 7505: null MX is a permanent failure.
    assert_eq!(resolver.mx("nullmx.test").await, Ok(MxAnswer::Null));
    let e = mx::targets(&resolver, "nullmx.test", 25, 5, 1, &Ourselves::default())
        .await
        .unwrap_err();
    assert_eq!(e, MxError::NullMx("nullmx.test".into()));
    assert!(e.is_permanent());

    // NXDOMAIN: permanent.
    let e = resolver.mx("nowhere.test").await.unwrap_err();
    assert_eq!(e, DnsError::NxDomain("nowhere.test".into()));
    assert!(e.is_permanent());

    // SERVFAIL: transient (could not decide).
    let e = resolver.mx("servfail.test").await.unwrap_err();
    assert!(!e.is_permanent(), "{e:?}");
    let e = mx::targets(&resolver, "servfail.test", 25, 5, 1, &Ourselves::default())
        .await
        .unwrap_err();
    assert!(!e.is_permanent());
}

#[tokio::test]
async fn unreachable_dns_server_is_transient() {
    // A port where nothing answers: the query times out (transient).
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let resolver = HickoryResolver::with_servers(&[addr], Duration::from_millis(200)).unwrap();
    let e = resolver.mx("mx.test").await.unwrap_err();
    assert!(!e.is_permanent(), "{e:?}");
    drop(silent);
}
