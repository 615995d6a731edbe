//! yizhan's tokio server: listeners, the connection driver around `yizhan_proto::server`,
//! recipient policy and the queue runner.
#![forbid(unsafe_code)]

pub mod conn;
pub mod control;
pub mod directory;
pub mod listener;
pub mod pickup;
pub mod policy;
pub mod queue_runner;
pub mod settings;
