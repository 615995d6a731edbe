//! yizhan delivery: Maildir (local), later routing, SMTP relay and DSNs.
#![forbid(unsafe_code)]

pub mod maildir;
