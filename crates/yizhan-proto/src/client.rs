//! The sender-SMTP state machine.
