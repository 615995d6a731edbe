//! The validator of `[[dkim]]`: each key is read now, so a missing or wrong key file is a
//! problem of the configuration (named by file, line and key), not a surprise at the first
//! message.

use std::path::{Path, PathBuf};

use yizhan_server::dkim::{Algorithm, DEFAULT_SIGNED_HEADERS, DkimKey, DkimKeys};
use yizhan_server::settings::Settings;

use super::Keys;
use super::check::Validator;
use super::raw::RawConfig;
use super::values::DomainName;

impl RawConfig {
    pub(super) fn dkim(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let mut keys = Vec::new();
        for (i, raw) in self.dkim.iter().enumerate() {
            let key = |name: &str| format!("dkim[{i}].{name}");
            let domain: Option<DomainName> = v.parse(&key("domain"), Some(&raw.domain));
            let selector = raw.selector.get_ref();
            let selector_ok = !selector.is_empty()
                && selector.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !selector_ok {
                v.problem(
                    key("selector"),
                    Some(raw.selector.span().start),
                    format!("{selector:?} is not a selector (letters, digits and hyphens, e.g. \"mail2026\")"),
                );
            }
            let algorithm = match &raw.algorithm {
                None => Some(Algorithm::RsaSha256),
                Some(name) => v.convert_value(&key("algorithm"), name, |n| {
                    Algorithm::from_name(n).ok_or_else(|| {
                        format!("unknown algorithm {n:?} (expected \"rsa-sha256\" or \"ed25519-sha256\")")
                    })
                }),
            };
            let headers = match &raw.headers {
                None => DEFAULT_SIGNED_HEADERS
                    .iter()
                    .map(|h| (*h).to_owned())
                    .collect(),
                Some(list) => list
                    .get_ref()
                    .iter()
                    .map(|h| h.get_ref().clone())
                    .collect::<Vec<_>>(),
            };
            if !headers.iter().any(|h| h.eq_ignore_ascii_case("from"))
                && let Some(list) = &raw.headers
            {
                v.problem(
                    key("headers"),
                    Some(list.span().start),
                    "must include From (RFC 6376 5.4)",
                );
            }
            if keys
                .iter()
                .any(|k: &DkimKey| domain.as_ref().is_some_and(|d| k.domain == d.0))
            {
                v.problem(
                    key("domain"),
                    Some(raw.domain.span().start),
                    "a second key for this domain",
                );
                continue;
            }
            let (Some(domain), Some(algorithm), true) = (domain, algorithm, selector_ok) else {
                continue;
            };
            let path = key_path(v.file, raw.key.get_ref());
            if v.keys == Keys::Skip {
                continue;
            }
            match DkimKey::load(&domain.0, selector, &path, algorithm, headers) {
                Ok(loaded) => keys.push(loaded),
                Err(e) => v.problem(key("key"), Some(raw.key.span().start), e.to_string()),
            }
        }
        settings.dkim = match v.keys {
            Keys::Read => DkimKeys(keys),
            Keys::Skip => DkimKeys::default(),
        };
    }
}

/// A key file as written: a relative one is relative to the configuration file's directory.
pub(super) fn key_path(file: &str, given: &str) -> PathBuf {
    let given = Path::new(given);
    match Path::new(file).parent() {
        Some(dir) if given.is_relative() && !file.starts_with('<') => dir.join(given),
        _ => given.to_path_buf(),
    }
}
