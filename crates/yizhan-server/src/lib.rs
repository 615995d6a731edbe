//! yizhan's tokio server: listeners, connection driver, queue runner
#![forbid(unsafe_code)]
