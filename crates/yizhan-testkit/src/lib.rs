//! Test helpers for yizhan: dialog runner, fakes
#![forbid(unsafe_code)]
