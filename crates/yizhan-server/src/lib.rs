//! yizhan's tokio server: listeners, the connection driver around `yizhan_proto::server`,
//! recipient and relay policy, TLS, AUTH and the queue runner.
#![forbid(unsafe_code)]

mod accept;
pub mod admin;
pub mod auth;
pub mod checks;
pub mod conn;
pub mod control;
pub mod directory;
pub mod dkim;
pub mod events;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod pickup;
pub mod policy;
pub mod proxy;
pub mod queue;
pub mod record;
pub mod reload;
pub mod settings;
pub mod submit;
pub mod summary;
pub mod tls;
pub mod trace;
