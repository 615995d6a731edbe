//! Which reply codes answer which command (RFC 5321 4.3.2, with RFC 3207 and 4954): a reply
//! outside them is flagged. 421 may answer anything (RFC 5321 3.8), and the syntax and
//! sequence errors (500-504) any command.

/// What a reply answers: a command, or the end of the message text.
pub(crate) fn expected(answering: &str) -> &'static [u16] {
    match answering {
        "GREETING" => &[220, 554],
        "HELO" | "EHLO" => &[250, 550],
        "MAIL" | "SEND" | "SOML" | "SAML" => &[250, 451, 452, 455, 530, 550, 552, 553, 555],
        "RCPT" => &[250, 251, 450, 451, 452, 455, 530, 550, 551, 552, 553, 555],
        "DATA" => &[354, 451, 554],
        "END-OF-DATA" | "BDAT" => &[250, 450, 451, 452, 550, 552, 554],
        "RSET" | "NOOP" => &[250],
        "VRFY" => &[250, 251, 252, 550, 551, 553],
        "EXPN" => &[250, 252, 550],
        "HELP" => &[211, 214],
        "QUIT" => &[221],
        "TURN" => &[250, 450],
        "ETRN" => &[250, 251, 252, 253, 458, 459],
        "STARTTLS" => &[220, 454],
        "AUTH" => &[235, 334, 432, 454, 530, 534, 535, 538],
        _ => &[],
    }
}

/// Whether `code` is a fitting answer to `answering`.
pub(crate) fn fits(answering: &str, code: u16) -> bool {
    code == 421 || (500..=504).contains(&code) || expected(answering).contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_answers() {
        assert!(fits("MAIL", 250) && fits("MAIL", 503) && fits("QUIT", 421));
        assert!(!fits("MAIL", 354) && !fits("DATA", 250) && !fits("QUIT", 250));
        assert!(fits("END-OF-DATA", 250) && fits("AUTH", 334));
    }
}
