//! Message data: the DATA reader (RFC 5321 4.5.2 dot-unstuffing, 3.3 end of data), the BDAT
//! chunk reader (RFC 3030) and the dot-stuffer the client uses to send.
