//! The validator: converts raw values into settings values and records each problem with its
//! file, line, column and key, so that one run reports all of them.

use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;
use yizhan_server::settings::{TlsPolicy, VerifyPolicy};

use super::Problem;
use super::values::{DurationValue, Network, SizeValue};

/// A list of strings as written, each with its place.
pub(super) type RawList = Spanned<Vec<Spanned<String>>>;

/// Collects problems with their location.
pub(super) struct Validator<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    /// Whether key files are read ([`super::Keys`]).
    pub(super) keys: super::Keys,
    pub(super) problems: Vec<Problem>,
}

impl Validator<'_> {
    fn location(&self, offset: usize) -> (usize, usize) {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    /// Records a problem with `key`; `span` is the byte offset of the value, when known.
    pub(super) fn problem(
        &mut self,
        key: impl Into<String>,
        span: Option<usize>,
        reason: impl Into<String>,
    ) {
        let location = span.map(|offset| self.location(offset));
        self.problems.push(Problem {
            file: self.file.to_owned(),
            location,
            key: key.into(),
            reason: reason.into(),
        });
    }

    /// Converts `value` with `convert`; a failure is recorded and gives `None`.
    pub(super) fn convert_value<R, T>(
        &mut self,
        key: &str,
        value: &Spanned<R>,
        convert: impl FnOnce(&R) -> Result<T, String>,
    ) -> Option<T> {
        match convert(value.get_ref()) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.problem(key, Some(value.span().start), reason);
                None
            }
        }
    }

    /// A value that parses itself ([`FromStr`]); `None` when absent or wrong.
    pub(super) fn parse<T: FromStr<Err = String>>(
        &mut self,
        key: &str,
        value: Option<&Spanned<String>>,
    ) -> Option<T> {
        self.convert_value(key, value?, |text| text.parse())
    }

    /// Each item of a list parsed ([`FromStr`]), a wrong one recorded as `key[i]` and left
    /// out; `None` when the list is absent.
    pub(super) fn list<T: FromStr<Err = String>>(
        &mut self,
        key: &str,
        value: Option<&RawList>,
    ) -> Option<Vec<T>> {
        let list = value?;
        let items = list.get_ref().iter().enumerate();
        Some(
            items
                .filter_map(|(i, item)| self.parse(&format!("{key}[{i}]"), Some(item)))
                .collect(),
        )
    }

    /// A list of networks ([`Network`]); `None` when absent.
    pub(super) fn networks(&mut self, key: &str, value: Option<&RawList>) -> Option<Vec<IpNet>> {
        let list: Vec<Network> = self.list(key, value)?;
        Some(list.into_iter().map(|n| n.0).collect())
    }

    /// An integer at least `min`, converted to `T`; `default` when absent or wrong.
    pub(super) fn integer<T: TryFrom<i64> + Copy>(
        &mut self,
        key: &str,
        value: &Option<Spanned<i64>>,
        min: i64,
        why: &str,
        default: T,
    ) -> T {
        let Some(value) = value else { return default };
        self.convert_value(key, value, |&n| {
            if n < min {
                return Err(format!("{n} is below the minimum {min}{why}"));
            }
            T::try_from(n).map_err(|_| format!("{n} is too large"))
        })
        .unwrap_or(default)
    }

    /// A size in bytes ([`SizeValue`]) at least `min`; `default` when absent or wrong.
    pub(super) fn size(
        &mut self,
        key: &str,
        value: &Option<Spanned<SizeValue>>,
        min: u64,
        default: u64,
    ) -> u64 {
        let Some(value) = value else { return default };
        self.convert_value(key, value, |raw| {
            let n = raw.to_bytes()?;
            if n < min {
                return Err(format!("{n} bytes is below the minimum {min}"));
            }
            Ok(n)
        })
        .unwrap_or(default)
    }

    /// A duration ([`DurationValue`]); `default` when absent or wrong. `positive` refuses zero.
    pub(super) fn duration(
        &mut self,
        key: &str,
        value: &Option<Spanned<DurationValue>>,
        positive: bool,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        self.convert_value(key, value, |raw| match raw.to_duration()? {
            d if positive && d.is_zero() => Err("must be more than 0".to_owned()),
            d => Ok(d),
        })
        .unwrap_or(default)
    }

    /// A VRFY/EXPN policy name; `default` when absent or wrong.
    pub(super) fn policy(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: VerifyPolicy,
    ) -> VerifyPolicy {
        let Some(value) = value else { return default };
        self.convert_value(key, value, |name| {
            VerifyPolicy::from_name(name).ok_or_else(|| {
                format!(
                    "unknown policy {name:?} (expected \"disabled\", \"cannot-verify\" or \"enabled\")"
                )
            })
        })
        .unwrap_or(default)
    }

    /// A TLS policy name (`none`, `opportunistic`, `require`, `verify`); `None` when absent or
    /// wrong.
    pub(super) fn tls_policy(
        &mut self,
        key: &str,
        value: Option<&Spanned<String>>,
    ) -> Option<TlsPolicy> {
        self.convert_value(key, value?, |name| {
            TlsPolicy::from_name(name).ok_or_else(|| {
                format!(
                    "unknown TLS policy {name:?} (expected \"none\", \"opportunistic\", \"require\" or \"verify\")"
                )
            })
        })
    }
}
