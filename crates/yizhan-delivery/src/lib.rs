//! yizhan delivery: routing, Maildir, SMTP relay, DSN
#![forbid(unsafe_code)]
