//! The validator of `[admin]`: the address, and the token that must guard it anywhere but on
//! loopback (read now, like the DKIM keys: a missing file is a configuration problem).

use std::net::SocketAddr;

use yizhan_server::settings::Settings;

use super::Keys;
use super::check::Validator;
use super::raw::RawConfig;

/// The shortest token accepted: 128 bits of hex or base64 are 22-32 characters.
const MIN_TOKEN_LENGTH: usize = 16;

impl RawConfig {
    pub(super) fn admin(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.admin;
        let admin = &mut settings.admin;
        if let Some(enabled) = raw.enabled {
            admin.enabled = enabled;
        }
        if let Some(address) = &raw.address {
            match address.get_ref().parse::<SocketAddr>() {
                Ok(parsed) => admin.address = parsed,
                Err(_) => v.problem(
                    "admin.address",
                    Some(address.span().start),
                    format!(
                        "invalid address {:?}: expected IP:port, e.g. \"127.0.0.1:8025\"",
                        address.get_ref()
                    ),
                ),
            }
        }
        if let Some(file) = &raw.token_file {
            let path = super::dkim::key_path(v.file, file.get_ref());
            let read = match v.keys {
                Keys::Skip => Ok(None),
                Keys::Read => std::fs::read_to_string(&path).map(Some),
            };
            match read {
                Ok(Some(text)) if text.trim().len() < MIN_TOKEN_LENGTH => v.problem(
                    "admin.token_file",
                    Some(file.span().start),
                    format!(
                        "{}: the token must be at least {MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 32`)",
                        path.display()
                    ),
                ),
                Ok(Some(text)) => admin.token = Some(text.trim().to_owned()),
                // A client program: the token is not its business, but "set" is.
                Ok(None) => admin.token = Some(String::new()),
                Err(e) => v.problem(
                    "admin.token_file",
                    Some(file.span().start),
                    format!("{}: cannot read: {e}", path.display()),
                ),
            }
        }
        if admin.enabled && !admin.address.ip().is_loopback() && raw.token_file.is_none() {
            let at = raw.address.as_ref().map(|a| a.span().start);
            v.problem(
                "admin.address",
                at,
                format!(
                    "{} is not a loopback address: set admin.token_file (a bearer token), or \
                     listen on 127.0.0.1",
                    admin.address
                ),
            );
        }
    }
}
