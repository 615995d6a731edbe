//! yizhan's durable message spool with group commit
#![forbid(unsafe_code)]
