//! The command line reader (RFC 5321 2.3.8: lines end with CRLF only; 4.5.3.1.4: command lines
//! of at least 512 octets).
