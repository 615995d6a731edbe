//! SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 3463, RFC 2034), and every reply
//! text the server ever sends, as a named constructor.

/// An enhanced status code `class.subject.detail` (RFC 3463 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2, 4 or 5.
    pub class: u8,
    /// Subject (0..=999).
    pub subject: u16,
    /// Detail (0..=999).
    pub detail: u16,
}

/// A reply: a three-digit code, an optional enhanced status code and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (200..=599).
    pub code: u16,
    /// The enhanced status code, written at the start of every line when the session has
    /// ENHANCEDSTATUSCODES on.
    pub enhanced: Option<EnhancedCode>,
    /// The text lines (at least one; may be empty strings). No CR or LF inside.
    pub lines: Vec<String>,
}
