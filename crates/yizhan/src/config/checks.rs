//! The validator of `[checks]` and of each listener's `checks` table: the modes by name, the
//! exempt networks.

use toml::Spanned;
use yizhan_server::checks::{Checks, ChecksOverrides, DmarcMode, SpfMode, TagMode};
use yizhan_server::settings::Settings;

use super::check::Validator;
use super::raw::{RawChecks, RawConfig};

impl RawConfig {
    pub(super) fn checks(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.checks;
        let overrides = modes(v, "checks", raw);
        settings.checks.checks = overrides.apply(Checks::default());
        if let Some(networks) = v.networks("checks.exempt", raw.exempt.as_ref()) {
            settings.checks.exempt = networks;
        }
    }
}

/// A listener's `checks` table: the keys it sets (`exempt` belongs to `[checks]` only).
pub(super) fn listener_checks(
    v: &mut Validator<'_>,
    i: usize,
    raw: Option<&Spanned<RawChecks>>,
) -> ChecksOverrides {
    let Some(raw) = raw else {
        return ChecksOverrides::default();
    };
    let key = format!("listener[{i}].checks");
    if let Some(exempt) = &raw.get_ref().exempt {
        v.problem(
            format!("{key}.exempt"),
            Some(exempt.span().start),
            "set in [checks] only (it applies to every listener)",
        );
    }
    modes(v, &key, raw.get_ref())
}

/// The four modes of a `checks` table, each checked against its names.
fn modes(v: &mut Validator<'_>, table: &str, raw: &RawChecks) -> ChecksOverrides {
    ChecksOverrides {
        spf: mode(
            v,
            table,
            "spf",
            &raw.spf,
            SpfMode::from_name,
            SpfMode::NAMES,
        ),
        dkim: mode(
            v,
            table,
            "dkim",
            &raw.dkim,
            TagMode::from_name,
            TagMode::NAMES,
        ),
        arc: mode(
            v,
            table,
            "arc",
            &raw.arc,
            TagMode::from_name,
            TagMode::NAMES,
        ),
        dmarc: mode(
            v,
            table,
            "dmarc",
            &raw.dmarc,
            DmarcMode::from_name,
            DmarcMode::NAMES,
        ),
    }
}

fn mode<T>(
    v: &mut Validator<'_>,
    table: &str,
    name: &str,
    value: &Option<Spanned<String>>,
    from_name: fn(&str) -> Option<T>,
    names: &[(&str, T)],
) -> Option<T> {
    let value = value.as_ref()?;
    v.convert_value(&format!("{table}.{name}"), value, |text| {
        from_name(text).ok_or_else(|| {
            let expected: Vec<String> = names.iter().map(|(n, _)| format!("{n:?}")).collect();
            format!("unknown value {text:?} (expected {})", expected.join(", "))
        })
    })
}
