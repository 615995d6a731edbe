//! The explanations, as data: one TOML file per language (`catalogue/en.toml`,
//! `catalogue/zh.toml`), compiled in. Code never holds an explanation's words.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A language of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Simplified Chinese, in the seed article's terms.
    Zh,
}

impl Lang {
    /// Every language.
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Zh];

    /// `en` or `zh`.
    pub fn parse(name: &str) -> Option<Lang> {
        match name.to_ascii_lowercase().as_str() {
            "en" | "english" => Some(Lang::En),
            "zh" | "zh-cn" | "chinese" => Some(Lang::Zh),
            _ => None,
        }
    }

    fn source(self) -> &'static str {
        match self {
            Lang::En => include_str!("../catalogue/en.toml"),
            Lang::Zh => include_str!("../catalogue/zh.toml"),
        }
    }
}

/// A command's entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandText {
    /// What it asks (`{arg}`: its argument).
    pub text: String,
    /// What it does to the three buffers.
    pub buffers: String,
    /// Where the RFCs say so.
    pub rfc: String,
}

/// A reply code's, capability's or finding's entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// What it means.
    pub text: String,
    /// Where the RFCs say so.
    pub rfc: String,
}

/// One language's catalogue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// Words used around the explanations (`{...}` filled in).
    pub terms: BTreeMap<String, String>,
    /// By verb.
    pub commands: BTreeMap<String, CommandText>,
    /// By three-digit code.
    pub replies: BTreeMap<String, Text>,
    /// RFC 3463 classes, by digit.
    pub classes: BTreeMap<String, String>,
    /// RFC 3463 subjects and details, as `X.Y.Z`.
    pub enhanced: BTreeMap<String, String>,
    /// EHLO keywords.
    pub capabilities: BTreeMap<String, Text>,
    /// SASL mechanisms.
    pub mechanisms: BTreeMap<String, String>,
    /// What the explainer may flag.
    pub findings: BTreeMap<String, Text>,
    /// The checks of `yizhan probe`'s report card.
    pub probe: BTreeMap<String, Text>,
}

/// Why a catalogue could not be read (a bug: they are compiled in and tested).
#[derive(Debug, thiserror::Error)]
#[error("the explanation catalogue does not parse: {0}")]
pub struct CatalogueError(#[from] toml::de::Error);

impl Catalogue {
    /// The catalogue of `lang`.
    pub fn load(lang: Lang) -> Result<Catalogue, CatalogueError> {
        Ok(toml::from_str(lang.source())?)
    }

    /// A term with its `{name}` placeholders filled from `values`.
    pub fn term(&self, key: &str, values: &[(&str, &str)]) -> String {
        let text = self.terms.get(key).map_or(key, String::as_str);
        fill(text, values)
    }

    /// The meaning of an enhanced status code (`5.1.1`): its class, then its detail, or its
    /// subject when the detail is not known.
    pub fn enhanced(&self, class: u8, subject: u16, detail: u16) -> Option<String> {
        let class_text = self.classes.get(&class.to_string())?;
        if let Some(text) = self.enhanced.get(&format!("X.{subject}.{detail}")) {
            return Some(format!("{class_text}; {text}"));
        }
        // The subject is known, the detail is not: said so, not passed off as X.Y.0.
        let subject_text = self.enhanced.get(&format!("X.{subject}.0"))?;
        let unknown = self.term("unknown_detail", &[("detail", &detail.to_string())]);
        Some(format!("{class_text}; {subject_text} {unknown}"))
    }
}

/// `text` with each `{name}` replaced by its value.
pub fn fill(text: &str, values: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn keys(c: &Catalogue) -> BTreeSet<String> {
        let mut k = BTreeSet::new();
        let mut add = |table: &str, names: Vec<&String>| {
            k.extend(names.into_iter().map(|n| format!("{table}.{n}")));
        };
        add("terms", c.terms.keys().collect());
        add("commands", c.commands.keys().collect());
        add("replies", c.replies.keys().collect());
        add("classes", c.classes.keys().collect());
        add("enhanced", c.enhanced.keys().collect());
        add("capabilities", c.capabilities.keys().collect());
        add("mechanisms", c.mechanisms.keys().collect());
        add("findings", c.findings.keys().collect());
        add("probe", c.probe.keys().collect());
        k
    }

    /// Every language explains the same things.
    #[test]
    fn every_language_has_every_entry() {
        let en = Catalogue::load(Lang::En).unwrap();
        for lang in Lang::ALL {
            let other = Catalogue::load(lang).unwrap();
            assert_eq!(keys(&other), keys(&en), "{lang:?}");
        }
    }

    /// Every command the protocol core parses, and every reply code it sends, is explained.
    #[test]
    fn the_catalogue_covers_what_yizhan_knows() {
        let en = Catalogue::load(Lang::En).unwrap();
        for verb in crate::KNOWN_VERBS {
            assert!(en.commands.contains_key(verb), "command {verb}");
        }
        for code in crate::KNOWN_REPLIES {
            assert!(en.replies.contains_key(&code.to_string()), "reply {code}");
        }
        for keyword in crate::KNOWN_CAPABILITIES {
            assert!(
                en.capabilities.contains_key(keyword),
                "capability {keyword}"
            );
        }
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(fill("a {x} b {y}", &[("x", "1"), ("y", "2")]), "a 1 b 2");
        let en = Catalogue::load(Lang::En).unwrap();
        assert_eq!(
            en.enhanced(5, 1, 1).unwrap(),
            "permanent failure: sending it again as it is will fail again; bad destination mailbox address (no such user)"
        );
        assert!(
            en.enhanced(2, 1, 99)
                .unwrap()
                .ends_with("other address status (detail 99 not in the catalogue)")
        );
        assert!(en.enhanced(3, 0, 0).is_none());
    }
}
