//! What the inbound checks do, per listener (`[checks]`, `[[listener]] checks`): plain values,
//! every default here once.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// SPF (RFC 7208) for the HELO and MAIL FROM identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpfMode {
    /// Checked and reported in `Authentication-Results:`; never refuses.
    #[default]
    Tag,
    /// As `Tag`, and a `fail` is refused at MAIL (`550 5.7.23`, RFC 7372), a `temperror`
    /// deferred (`451 4.7.24`).
    RejectFail,
    /// Not checked (still evaluated if DMARC needs it, but not reported).
    Off,
}

/// DKIM verification (RFC 6376) or ARC chain validation (RFC 8617).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagMode {
    /// Checked and reported.
    #[default]
    Tag,
    /// Not reported.
    Off,
}

/// DMARC (RFC 7489).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DmarcMode {
    /// Reported, and the domain's policy applied: `p=reject` is refused at the end of data
    /// (`550 5.7.1`), `p=quarantine` delivered with [`QUARANTINE_FIELD`]; a temporary DNS
    /// error where the policy would apply is deferred (`451 4.7.1`), never a silent pass.
    #[default]
    Enforce,
    /// Reported only.
    Tag,
    /// Not checked.
    Off,
}

/// The header field added to mail that a `p=quarantine` DMARC policy applies to (the value
/// names the domain); with `X-Spam-Flag: YES`, which mail filters (Sieve, Dovecot, clients)
/// already know.
pub const QUARANTINE_FIELD: &str = "X-Yizhan-Quarantine";

macro_rules! named {
    ($ty:ty, $($variant:ident = $name:literal),+) => {
        impl $ty {
            /// Every value with its name in the configuration.
            pub const NAMES: &[(&str, $ty)] = &[$(($name, <$ty>::$variant)),+];

            /// The value called `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
            }

            /// The name in the configuration.
            pub fn as_str(self) -> &'static str {
                Self::NAMES.iter().find(|(_, v)| *v == self).map_or("", |(n, _)| n)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named!(
    SpfMode,
    Tag = "tag",
    RejectFail = "reject-fail",
    Off = "off"
);
named!(TagMode, Tag = "tag", Off = "off");
named!(DmarcMode, Enforce = "enforce", Tag = "tag", Off = "off");

/// The checks of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checks {
    /// SPF.
    pub spf: SpfMode,
    /// DKIM verification.
    pub dkim: TagMode,
    /// ARC.
    pub arc: TagMode,
    /// DMARC.
    pub dmarc: DmarcMode,
}

impl Checks {
    /// Nothing checked (submission listeners: their users are authenticated, and signed).
    pub const OFF: Checks = Checks {
        spf: SpfMode::Off,
        dkim: TagMode::Off,
        arc: TagMode::Off,
        dmarc: DmarcMode::Off,
    };

    /// Whether anything is checked.
    pub fn any(&self) -> bool {
        *self != Self::OFF
    }

    /// Whether SPF is evaluated (for itself or for DMARC).
    pub fn needs_spf(&self) -> bool {
        self.spf != SpfMode::Off || self.dmarc != DmarcMode::Off
    }

    /// Whether the message must be kept whole until its end (DKIM, ARC, DMARC read it).
    pub fn needs_message(&self) -> bool {
        self.dkim != TagMode::Off || self.arc != TagMode::Off || self.dmarc != DmarcMode::Off
    }
}

/// Per-listener values that replace the `[checks]` ones (`None` keeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChecksOverrides {
    /// [`Checks::spf`].
    pub spf: Option<SpfMode>,
    /// [`Checks::dkim`].
    pub dkim: Option<TagMode>,
    /// [`Checks::arc`].
    pub arc: Option<TagMode>,
    /// [`Checks::dmarc`].
    pub dmarc: Option<DmarcMode>,
}

impl ChecksOverrides {
    /// `base` with these overrides applied.
    pub fn apply(&self, base: Checks) -> Checks {
        Checks {
            spf: self.spf.unwrap_or(base.spf),
            dkim: self.dkim.unwrap_or(base.dkim),
            arc: self.arc.unwrap_or(base.arc),
            dmarc: self.dmarc.unwrap_or(base.dmarc),
        }
    }
}

/// `[checks]`: the checks of `smtp` listeners, and who is never checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksSettings {
    /// What is checked.
    pub checks: Checks,
    /// Clients never checked: this host (`127.0.0.0/8`, `::1`) by default, as rspamd's
    /// `local_addrs`; SPF means nothing for mail that a local program hands over by SMTP.
    /// Authenticated users and `relay_networks` are never checked either (they are signed).
    pub exempt: Vec<IpNet>,
}

impl Default for ChecksSettings {
    fn default() -> Self {
        ChecksSettings {
            checks: Checks::default(),
            exempt: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
        }
    }
}

impl ChecksSettings {
    /// Whether mail from `ip` is exempt.
    pub fn exempts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.exempt.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_defaults_are_the_issue_s() {
        for (name, mode) in SpfMode::NAMES {
            assert_eq!(SpfMode::from_name(name), Some(*mode));
            assert_eq!(mode.to_string(), *name);
        }
        assert_eq!(DmarcMode::from_name("enforce"), Some(DmarcMode::Enforce));
        assert_eq!(TagMode::from_name("reject"), None);
        let d = Checks::default();
        assert_eq!(
            (d.spf, d.dkim, d.arc, d.dmarc),
            (SpfMode::Tag, TagMode::Tag, TagMode::Tag, DmarcMode::Enforce)
        );
        assert!(!Checks::OFF.any() && d.any());
    }

    #[test]
    fn this_host_is_exempt_by_default() {
        let s = ChecksSettings::default();
        assert!(s.exempts("127.0.0.1".parse().unwrap()));
        assert!(s.exempts("::1".parse().unwrap()));
        assert!(s.exempts("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!s.exempts("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn overrides_replace_one_key_each() {
        let o = ChecksOverrides {
            dmarc: Some(DmarcMode::Tag),
            ..ChecksOverrides::default()
        };
        let c = o.apply(Checks::default());
        assert_eq!(c.dmarc, DmarcMode::Tag);
        assert_eq!(c.spf, SpfMode::Tag);
        assert!(
            Checks {
                dmarc: DmarcMode::Off,
                dkim: TagMode::Off,
                arc: TagMode::Off,
                ..c
            }
            .needs_spf()
        );
    }
}
