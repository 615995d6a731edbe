//! The receiver-SMTP state machine.
