//! The local directory: which domains are ours and where mail for a local address goes.
//!
//! Pure data and lookups, no I/O. Built once from the configuration ([`DirectoryBuilder`],
//! which checks every entry and reports every problem at once), then shared read-only.
//!
//! - Domains and local parts compare case-insensitively: everything is stored lower-case.
//! - A local domain with no mailbox listed is a catch-all: every local part is accepted.
//!   A domain with mailboxes listed rejects unknown local parts.
//! - Aliases expand recursively to their members; loops are cut and duplicates removed.
//!   A member in a foreign domain becomes [`Target::Remote`] (RFC 5321 3.4, "251 will forward").
//! - Relocated addresses answer with their new address (RFC 5321 3.4, 551).
//! - `postmaster` (any case, with or without a local domain) always resolves to the configured
//!   postmaster address (RFC 5321 4.5.1), which is accepted even in a domain with mailboxes.
//! - `VRFY` / `EXPN` lookups (RFC 5321 3.5): by address, local part or full name; several
//!   matches are reported as ambiguous (3.5.1, "553 User ambiguous"); `VRFY` of a list is
//!   positive because a message to it reaches every member (3.5.2).
//!
//! Address syntax accepted in entries: a dot-atom local part (RFC 5321 4.1.2, with UTF-8 as
//! RFC 6531 allows) of at most 64 octets, `@`, and a domain name of letter-digit-hyphen labels
//! (RFC 5321 4.1.2, 4.5.3.1). Quoted local parts and address literals are not supported here.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

/// The local part every domain must accept (RFC 5321 4.5.1).
pub const POSTMASTER: &str = "postmaster";

/// Local domains, mailboxes, aliases and relocated users, in canonical lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// Local domains in configuration order; the first is the primary domain.
    domains: Vec<String>,
    /// The local domains with at least one mailbox listed (the others are catch-all).
    strict_domains: BTreeSet<String>,
    /// Mailbox address -> full name.
    mailboxes: BTreeMap<String, Option<String>>,
    /// Alias address -> members, in configuration order.
    aliases: BTreeMap<String, Vec<String>>,
    /// Old address -> new address.
    relocated: BTreeMap<String, String>,
    /// Where `postmaster` goes.
    postmaster: String,
}

impl Default for Directory {
    /// The embedded default: `localhost` as a catch-all domain, postmaster `postmaster@localhost`.
    fn default() -> Self {
        Self {
            domains: vec!["localhost".to_owned()],
            strict_domains: BTreeSet::new(),
            mailboxes: BTreeMap::new(),
            aliases: BTreeMap::new(),
            relocated: BTreeMap::new(),
            postmaster: "postmaster@localhost".to_owned(),
        }
    }
}

/// A mailbox on this server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalTarget {
    /// Canonical `local@domain`.
    pub address: String,
    /// Canonical domain.
    pub domain: String,
    /// Canonical local part.
    pub local: String,
}

/// Where one copy of a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A mailbox on this server.
    Local(LocalTarget),
    /// An alias member in a foreign domain (canonical address).
    Remote(String),
}

/// The answer to "where does mail for this recipient go?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Accept: a mailbox gives one target, an alias its expanded members (never empty).
    Deliver(Vec<Target>),
    /// The user has moved: answer 551 with this new address (RFC 5321 3.4).
    Relocated(String),
    /// A local domain, but no such user (550).
    UnknownUser,
    /// Not one of our domains.
    NotLocal,
}

/// The answer to a `VRFY` or `EXPN` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// One mailbox (or, for `VRFY`, one list, which reaches all its members).
    Mailbox {
        /// Canonical address.
        address: String,
        /// The configured full name, if any.
        full_name: Option<String>,
    },
    /// `EXPN` of an alias: its members, canonical, in configuration order.
    List(Vec<String>),
    /// Several addresses match the query (RFC 5321 3.5.1: 553 User ambiguous).
    Ambiguous(Vec<String>),
    /// The user has moved to this address (551).
    Relocated(String),
    /// Nothing matches in a local domain.
    Unknown,
    /// The query names a foreign domain.
    NotLocal,
}

/// Why a configured address or domain is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `@` separates local part and domain.
    #[error("missing '@' between local part and domain")]
    MissingAt,
    /// Not an RFC 5321 / RFC 6531 local part or domain (the protocol's own grammar, the one
    /// RCPT is parsed with).
    #[error(transparent)]
    Syntax(#[from] yizhan_proto::AddressError),
    /// A quoted local part (`"a b"@...`): a mailbox here must be a dot-string, as it names a
    /// Maildir folder.
    #[error("quoted local parts are not supported here")]
    Quoted,
    /// Not a valid internationalized domain name (UTS 46 processing fails, e.g. a bad
    /// `xn--` label or a disallowed character).
    #[error("not a valid internationalized domain name (UTS 46)")]
    Idna,
}

/// The one form in which domains are compared: UTS 46 mapping (case folded, `xn--` labels
/// decoded, NFC), so `Bücher.example`, `bücher.example` and `xn--bcher-kva.example` are one
/// domain, as they are one in the DNS. `None` if the name is not a valid IDN.
pub fn domain_key(domain: &str) -> Option<String> {
    let (mapped, checked) = idna::domain_to_unicode(domain);
    checked.is_ok().then_some(mapped)
}

/// Checks a domain name with the protocol's grammar and returns its canonical form
/// ([`domain_key`]).
pub fn canonical_domain(domain: &str) -> Result<String, AddressError> {
    yizhan_proto::address::Domain::parse(domain)?;
    domain_key(domain).ok_or(AddressError::Idna)
}

/// The form local parts are compared and stored in: Unicode NFC (so `café` typed with a
/// combining accent and with a precomposed `é` is one mailbox, RFC 6530 10.1), then lower-case.
pub fn local_key(local: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    if local.is_ascii() {
        return local.to_lowercase();
    }
    local.nfc().collect::<String>().to_lowercase()
}

/// Checks a local part with the protocol's grammar (a dot-string: no quoting) and returns it
/// in canonical form ([`local_key`]).
pub fn canonical_local_part(local: &str) -> Result<String, AddressError> {
    let parsed = yizhan_proto::address::LocalPart::parse(local)?;
    if local.starts_with('"') {
        return Err(AddressError::Quoted);
    }
    Ok(local_key(parsed.as_str()))
}

/// Checks `local@domain` and returns it in canonical lower-case.
pub fn canonical_address(address: &str) -> Result<String, AddressError> {
    let (local, domain) = address.rsplit_once('@').ok_or(AddressError::MissingAt)?;
    let local = canonical_local_part(local)?;
    let domain = canonical_domain(domain)?;
    Ok(format!("{local}@{domain}"))
}

/// Splits a canonical address (it always holds an `@`).
fn split(address: &str) -> (&str, &str) {
    address.rsplit_once('@').unwrap_or((address, ""))
}

/// Which builder entry a [`DirectoryError`] is about. Entries are numbered from 0 per kind, in
/// the order they were added, as the configuration file's `[[domain]]`, `[[mailbox]]`,
/// `[[alias]]` and `[[relocated]]` tables are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `domain[i].name`
    Domain(usize),
    /// `mailbox[i].address`
    Mailbox(usize),
    /// `mailbox[i].full_name`
    MailboxFullName(usize),
    /// `alias[i].address`
    Alias(usize),
    /// `alias[i].members` as a whole
    AliasMembers(usize),
    /// `alias[alias].members[member]`
    AliasMember {
        /// Which alias.
        alias: usize,
        /// Which member.
        member: usize,
    },
    /// `relocated[i].address`
    Relocated(usize),
    /// `relocated[i].new_address`
    RelocatedNewAddress(usize),
    /// `postmaster`
    Postmaster,
}

impl fmt::Display for Entry {
    /// Writes the configuration key, e.g. `mailbox[2].address`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(i) => write!(f, "domain[{i}].name"),
            Self::Mailbox(i) => write!(f, "mailbox[{i}].address"),
            Self::MailboxFullName(i) => write!(f, "mailbox[{i}].full_name"),
            Self::Alias(i) => write!(f, "alias[{i}].address"),
            Self::AliasMembers(i) => write!(f, "alias[{i}].members"),
            Self::AliasMember { alias, member } => write!(f, "alias[{alias}].members[{member}]"),
            Self::Relocated(i) => write!(f, "relocated[{i}].address"),
            Self::RelocatedNewAddress(i) => write!(f, "relocated[{i}].new_address"),
            Self::Postmaster => f.write_str("postmaster"),
        }
    }
}

/// What is wrong with one directory entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The address does not parse.
    #[error("bad address syntax: {0}")]
    Address(AddressError),
    /// The domain name does not parse.
    #[error("bad domain name: {0}")]
    Domain(AddressError),
    /// No `[[domain]]` was given.
    #[error("no local domain is configured")]
    NoDomain,
    /// The same domain twice.
    #[error("duplicate domain {domain} (first given as {first})")]
    DuplicateDomain {
        /// Canonical domain.
        domain: String,
        /// Where it was given first.
        first: Entry,
    },
    /// An entry that must be local is in a foreign domain.
    #[error("{address} is not in a local domain (add its domain as a [[domain]])")]
    NotLocalDomain {
        /// Canonical address.
        address: String,
    },
    /// The same address defined twice (as mailbox, alias or relocated entry).
    #[error("{address} is already defined as {first}")]
    DuplicateAddress {
        /// Canonical address.
        address: String,
        /// Where it was defined first.
        first: Entry,
    },
    /// A full name with control characters or line breaks, or empty.
    #[error("full name must be non-empty and on one line without control characters")]
    BadFullName,
    /// An alias with no members.
    #[error("an alias needs at least one member")]
    EmptyAlias,
    /// A member in a local domain that names nobody.
    #[error("{address} is not a mailbox, an alias, or an address in a catch-all domain")]
    UnknownMember {
        /// Canonical address.
        address: String,
    },
    /// A member that is a relocated address.
    #[error("{address} is relocated to {new_address}; list the new address instead")]
    RelocatedMember {
        /// Canonical address.
        address: String,
        /// Where it moved.
        new_address: String,
    },
    /// An alias whose expansion only leads back to aliases already visited.
    #[error("the alias expands to no recipient at all (its members only loop back)")]
    LoopOnly,
    /// A relocated entry that points at itself.
    #[error("the new address is the same as the old one")]
    RelocatedToItself,
    /// RFC 5321 4.5.1: postmaster must be deliverable.
    #[error("postmaster must be deliverable and cannot be relocated (RFC 5321 4.5.1)")]
    RelocatedPostmaster,
    /// The configured postmaster names nobody.
    #[error(
        "{address} is not a mailbox, an alias, a postmaster address, or an address in a catch-all domain"
    )]
    UnknownPostmaster {
        /// Canonical address.
        address: String,
    },
}

/// One problem found by [`DirectoryBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry}: {problem}")]
pub struct DirectoryError {
    /// Which entry.
    pub entry: Entry,
    /// What is wrong with it.
    pub problem: Problem,
}

/// Collects directory entries, then checks them all at once.
#[derive(Debug, Clone, Default)]
pub struct DirectoryBuilder {
    domains: Vec<String>,
    mailboxes: Vec<(String, Option<String>)>,
    aliases: Vec<(String, Vec<String>)>,
    relocated: Vec<(String, String)>,
    postmaster: Option<String>,
}

impl DirectoryBuilder {
    /// Adds a local domain. The first one is the primary domain.
    pub fn domain(&mut self, name: impl Into<String>) -> &mut Self {
        self.domains.push(name.into());
        self
    }

    /// Adds a mailbox, with an optional full name (used by `VRFY`).
    pub fn mailbox(&mut self, address: impl Into<String>, full_name: Option<String>) -> &mut Self {
        self.mailboxes.push((address.into(), full_name));
        self
    }

    /// Adds an alias with its members (local or remote addresses, or other aliases).
    pub fn alias<I, S>(&mut self, address: impl Into<String>, members: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let members = members.into_iter().map(Into::into).collect();
        self.aliases.push((address.into(), members));
        self
    }

    /// Adds a relocated user: mail for `address` is refused with 551 naming `new_address`.
    pub fn relocated(
        &mut self,
        address: impl Into<String>,
        new_address: impl Into<String>,
    ) -> &mut Self {
        self.relocated.push((address.into(), new_address.into()));
        self
    }

    /// Sets where `postmaster` goes (default `postmaster@<first domain>`).
    pub fn postmaster(&mut self, address: impl Into<String>) -> &mut Self {
        self.postmaster = Some(address.into());
        self
    }

    /// Checks every entry and builds the directory, or returns every problem found.
    pub fn build(&self) -> Result<Directory, Vec<DirectoryError>> {
        let mut errors: Vec<DirectoryError> = Vec::new();
        let err = |errors: &mut Vec<DirectoryError>, entry: Entry, problem: Problem| {
            errors.push(DirectoryError { entry, problem });
        };

        let mut domains: Vec<String> = Vec::new();
        let mut domain_entry: BTreeMap<String, Entry> = BTreeMap::new();
        for (i, name) in self.domains.iter().enumerate() {
            match canonical_domain(name) {
                Ok(domain) => {
                    if let Some(first) = domain_entry.get(&domain) {
                        let first = *first;
                        err(
                            &mut errors,
                            Entry::Domain(i),
                            Problem::DuplicateDomain { domain, first },
                        );
                    } else {
                        domain_entry.insert(domain.clone(), Entry::Domain(i));
                        domains.push(domain);
                    }
                }
                Err(e) => err(&mut errors, Entry::Domain(i), Problem::Domain(e)),
            }
        }
        if self.domains.is_empty() {
            err(&mut errors, Entry::Postmaster, Problem::NoDomain);
        }
        let is_local = |address: &str| domain_entry.contains_key(split(address).1);

        // Every defined address, with the entry that defined it first.
        let mut defined: BTreeMap<String, Entry> = BTreeMap::new();
        // Checks syntax, locality and uniqueness of a defining address.
        let mut define =
            |errors: &mut Vec<DirectoryError>, entry: Entry, address: &str| -> Option<String> {
                let address = match canonical_address(address) {
                    Ok(a) => a,
                    Err(e) => {
                        err(errors, entry, Problem::Address(e));
                        return None;
                    }
                };
                if !is_local(&address) {
                    err(errors, entry, Problem::NotLocalDomain { address });
                    return None;
                }
                if let Some(first) = defined.get(&address) {
                    let first = *first;
                    err(errors, entry, Problem::DuplicateAddress { address, first });
                    return None;
                }
                defined.insert(address.clone(), entry);
                Some(address)
            };

        let mut mailboxes = BTreeMap::new();
        let mut strict_domains = BTreeSet::new();
        for (i, (address, full_name)) in self.mailboxes.iter().enumerate() {
            if let Some(name) = full_name
                && (name.trim().is_empty() || name.chars().any(char::is_control))
            {
                err(&mut errors, Entry::MailboxFullName(i), Problem::BadFullName);
            }
            if let Some(address) = define(&mut errors, Entry::Mailbox(i), address) {
                strict_domains.insert(split(&address).1.to_owned());
                mailboxes.insert(address, full_name.as_ref().map(|n| n.trim().to_owned()));
            }
        }
        let mut aliases = BTreeMap::new();
        let mut alias_index = Vec::new();
        for (i, (address, members)) in self.aliases.iter().enumerate() {
            if members.is_empty() {
                err(&mut errors, Entry::AliasMembers(i), Problem::EmptyAlias);
            }
            let mut canonical_members = Vec::new();
            for (m, member) in members.iter().enumerate() {
                let entry = Entry::AliasMember {
                    alias: i,
                    member: m,
                };
                match canonical_address(member) {
                    Ok(member) => canonical_members.push((m, member)),
                    Err(e) => err(&mut errors, entry, Problem::Address(e)),
                }
            }
            if let Some(address) = define(&mut errors, Entry::Alias(i), address) {
                alias_index.push((i, address.clone()));
                aliases.insert(address, canonical_members);
            }
        }
        let mut relocated = BTreeMap::new();
        for (i, (address, new_address)) in self.relocated.iter().enumerate() {
            let new_address = match canonical_address(new_address) {
                Ok(a) => Some(a),
                Err(e) => {
                    err(
                        &mut errors,
                        Entry::RelocatedNewAddress(i),
                        Problem::Address(e),
                    );
                    None
                }
            };
            if let Some(address) = define(&mut errors, Entry::Relocated(i), address) {
                if split(&address).0 == POSTMASTER {
                    err(
                        &mut errors,
                        Entry::Relocated(i),
                        Problem::RelocatedPostmaster,
                    );
                }
                if let Some(new_address) = new_address {
                    if new_address == address {
                        err(
                            &mut errors,
                            Entry::RelocatedNewAddress(i),
                            Problem::RelocatedToItself,
                        );
                    }
                    relocated.insert(address, new_address);
                }
            }
        }

        // Is `address` (canonical) a recipient that resolves?
        let known = |address: &str| {
            let (local, domain) = split(address);
            mailboxes.contains_key(address)
                || aliases.contains_key(address)
                || local == POSTMASTER
                || !strict_domains.contains(domain)
        };
        for (i, address) in &alias_index {
            for (m, member) in &aliases[address] {
                let entry = Entry::AliasMember {
                    alias: *i,
                    member: *m,
                };
                if !is_local(member) {
                    continue;
                }
                if let Some(new_address) = relocated.get(member) {
                    let (address, new_address) = (member.clone(), new_address.clone());
                    err(
                        &mut errors,
                        entry,
                        Problem::RelocatedMember {
                            address,
                            new_address,
                        },
                    );
                } else if !known(member) {
                    err(
                        &mut errors,
                        entry,
                        Problem::UnknownMember {
                            address: member.clone(),
                        },
                    );
                }
            }
        }

        let postmaster = match &self.postmaster {
            Some(address) => match canonical_address(address) {
                Ok(address) => {
                    if relocated.contains_key(&address) {
                        err(&mut errors, Entry::Postmaster, Problem::RelocatedPostmaster);
                    } else if is_local(&address) && !known(&address) {
                        err(
                            &mut errors,
                            Entry::Postmaster,
                            Problem::UnknownPostmaster {
                                address: address.clone(),
                            },
                        );
                    }
                    address
                }
                Err(e) => {
                    err(&mut errors, Entry::Postmaster, Problem::Address(e));
                    String::new()
                }
            },
            None => format!(
                "{POSTMASTER}@{}",
                domains.first().map_or("", String::as_str)
            ),
        };

        let directory = Directory {
            domains,
            strict_domains,
            mailboxes,
            aliases: aliases
                .into_iter()
                .map(|(a, members)| (a, members.into_iter().map(|(_, m)| m).collect()))
                .collect(),
            relocated,
            postmaster,
        };
        if errors.is_empty() {
            // A loop is fine as long as the alias reaches someone.
            for (i, address) in &alias_index {
                if directory.expand(address).is_empty() {
                    err(&mut errors, Entry::Alias(*i), Problem::LoopOnly);
                }
            }
        }
        if errors.is_empty() {
            Ok(directory)
        } else {
            Err(errors)
        }
    }
}

/// What a query names, before VRFY and EXPN shape the answer.
enum Found {
    Mailbox(String),
    Alias(String),
    Relocated(String),
    Ambiguous(Vec<String>),
    Unknown,
    NotLocal,
}

impl Directory {
    /// Starts an empty builder.
    pub fn builder() -> DirectoryBuilder {
        DirectoryBuilder::default()
    }

    /// Whether `domain` (any case) is one of ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        domain_key(domain).is_some_and(|domain| self.domains.contains(&domain))
    }

    /// Whether `domain` is local and accepts every local part (no mailbox listed in it).
    pub fn is_catch_all(&self, domain: &str) -> bool {
        domain_key(domain).is_some_and(|domain| {
            self.domains.contains(&domain) && !self.strict_domains.contains(&domain)
        })
    }

    /// The local domains, canonical, in configuration order (the first is the primary).
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Where `postmaster` goes (canonical address).
    pub fn postmaster(&self) -> &str {
        &self.postmaster
    }

    /// The mailboxes with their full names, sorted by address.
    pub fn mailboxes(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.mailboxes
            .iter()
            .map(|(a, n)| (a.as_str(), n.as_deref()))
    }

    /// The aliases with their direct members, sorted by address.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.aliases.iter().map(|(a, m)| (a.as_str(), m.as_slice()))
    }

    /// The relocated users with their new addresses, sorted by old address.
    pub fn relocated(&self) -> impl Iterator<Item = (&str, &str)> {
        self.relocated.iter().map(|(a, n)| (a.as_str(), n.as_str()))
    }

    /// Where mail for `local@domain` goes; `domain` is `None` for the bare `<postmaster>`
    /// form (RFC 5321 4.1.1.3, 4.5.1).
    pub fn resolve(&self, local: &str, domain: Option<&str>) -> Resolution {
        let local = local_key(local);
        let Some(domain) = domain else {
            return if local == POSTMASTER {
                Resolution::Deliver(self.expand(&self.postmaster))
            } else {
                Resolution::UnknownUser
            };
        };
        let Some(domain) = domain_key(domain).filter(|d| self.domains.contains(d)) else {
            return Resolution::NotLocal;
        };
        let address = format!("{local}@{domain}");
        if self.aliases.contains_key(&address) || self.mailboxes.contains_key(&address) {
            return Resolution::Deliver(self.expand(&address));
        }
        if let Some(new_address) = self.relocated.get(&address) {
            return Resolution::Relocated(new_address.clone());
        }
        if local == POSTMASTER || !self.strict_domains.contains(&domain) {
            return Resolution::Deliver(self.expand(&address));
        }
        Resolution::UnknownUser
    }

    /// Answers `VRFY` (RFC 5321 3.5.1): a list is reported as one positive answer, since a
    /// message to it reaches all its members (3.5.2).
    pub fn vrfy(&self, query: &str) -> Lookup {
        match self.find(query) {
            Found::Mailbox(address) | Found::Alias(address) => self.mailbox_lookup(address),
            Found::Relocated(new_address) => Lookup::Relocated(new_address),
            Found::Ambiguous(addresses) => Lookup::Ambiguous(addresses),
            Found::Unknown => Lookup::Unknown,
            Found::NotLocal => Lookup::NotLocal,
        }
    }

    /// Answers `EXPN` (RFC 5321 3.5.2): an alias gives its direct members, a mailbox itself.
    pub fn expn(&self, query: &str) -> Lookup {
        match self.find(query) {
            Found::Alias(address) => Lookup::List(self.aliases[&address].clone()),
            Found::Mailbox(address) => self.mailbox_lookup(address),
            Found::Relocated(new_address) => Lookup::Relocated(new_address),
            Found::Ambiguous(addresses) => Lookup::Ambiguous(addresses),
            Found::Unknown => Lookup::Unknown,
            Found::NotLocal => Lookup::NotLocal,
        }
    }

    fn mailbox_lookup(&self, address: String) -> Lookup {
        let full_name = self.mailboxes.get(&address).cloned().flatten();
        Lookup::Mailbox { address, full_name }
    }

    /// Expands a canonical address to its targets: aliases recursively (each visited once),
    /// implicit `postmaster@<local domain>` to the configured postmaster, duplicates removed.
    fn expand(&self, address: &str) -> Vec<Target> {
        let mut out = Vec::new();
        self.expand_into(address, &mut HashSet::new(), &mut out);
        out
    }

    fn expand_into<'a>(
        &'a self,
        address: &'a str,
        seen: &mut HashSet<&'a str>,
        out: &mut Vec<Target>,
    ) {
        if let Some(members) = self.aliases.get(address) {
            if seen.insert(address) {
                for member in members {
                    self.expand_into(member, seen, out);
                }
            }
            return;
        }
        let (local, domain) = split(address);
        let target = if self.domains.iter().any(|d| d == domain) {
            if local == POSTMASTER
                && address != self.postmaster
                && !self.mailboxes.contains_key(address)
            {
                if seen.insert(address) {
                    self.expand_into(&self.postmaster, seen, out);
                }
                return;
            }
            Target::Local(LocalTarget {
                address: address.to_owned(),
                domain: domain.to_owned(),
                local: local.to_owned(),
            })
        } else {
            Target::Remote(address.to_owned())
        };
        if !out.contains(&target) {
            out.push(target);
        }
    }

    /// What a VRFY/EXPN argument names: `user@domain`, `<user@domain>`, `Name <user@domain>`,
    /// a bare local part, or (part of) a full name.
    fn find(&self, query: &str) -> Found {
        let mut query = query.trim();
        if let Some(inner) = query.strip_suffix('>')
            && let Some(start) = inner.rfind('<')
        {
            query = inner[start + 1..].trim();
        }
        if let Some((local, domain)) = query.rsplit_once('@') {
            let Some(domain) = domain_key(domain).filter(|d| self.domains.contains(d)) else {
                return Found::NotLocal;
            };
            return self.find_address(&format!("{}@{domain}", local_key(local)));
        }
        let query = local_key(query);
        if query.is_empty() {
            return Found::Unknown;
        }
        if query == POSTMASTER {
            return self.find_address(&self.postmaster);
        }
        let by_local = |address: &&String| split(address).0 == query;
        let by_name = |name: &Option<String>| {
            name.as_ref().is_some_and(|name| {
                let name = name.to_lowercase();
                name == query || name.split_whitespace().any(|word| word == query)
            })
        };
        let mut matches: Vec<String> = self
            .mailboxes
            .iter()
            .filter(|(address, name)| by_local(address) || by_name(name))
            .map(|(address, _)| address.clone())
            .chain(self.aliases.keys().filter(by_local).cloned())
            .collect();
        if matches.is_empty() && canonical_local_part(&query).is_ok() {
            matches = self
                .domains
                .iter()
                .filter(|d| !self.strict_domains.contains(*d))
                .map(|d| format!("{query}@{d}"))
                .collect();
        }
        match matches.len() {
            0 => Found::Unknown,
            1 => self.find_address(&matches.remove(0)),
            _ => {
                matches.sort();
                Found::Ambiguous(matches)
            }
        }
    }

    /// What a canonical address in a local domain names.
    fn find_address(&self, address: &str) -> Found {
        let (local, domain) = split(address);
        if self.aliases.contains_key(address) {
            Found::Alias(address.to_owned())
        } else if self.mailboxes.contains_key(address) {
            Found::Mailbox(address.to_owned())
        } else if let Some(new_address) = self.relocated.get(address) {
            Found::Relocated(new_address.clone())
        } else if local == POSTMASTER && address != self.postmaster {
            self.find_address(&self.postmaster)
        } else if local == POSTMASTER || self.is_catch_all(domain) || !self.is_local_domain(domain)
        {
            // The last case is only reached for a remote postmaster.
            Found::Mailbox(address.to_owned())
        } else {
            Found::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(address: &str) -> Target {
        let (l, d) = split(address);
        Target::Local(LocalTarget {
            address: address.to_owned(),
            domain: d.to_owned(),
            local: l.to_owned(),
        })
    }

    fn remote(address: &str) -> Target {
        Target::Remote(address.to_owned())
    }

    fn deliver(targets: &[Target]) -> Resolution {
        Resolution::Deliver(targets.to_vec())
    }

    /// test.example is strict (mailboxes listed), open.example is a catch-all.
    fn sample() -> Directory {
        let mut b = Directory::builder();
        b.domain("Test.Example")
            .domain("open.example")
            .mailbox("User@test.example", Some("Fred Smith".to_owned()))
            .mailbox("user2@test.example", Some("Harry Smith".to_owned()))
            .mailbox("solo@test.example", None)
            .alias(
                "list@test.example",
                ["user@test.example", "USER2@test.example"],
            )
            .alias(
                "nested@test.example",
                ["list@test.example", "user@test.example"],
            )
            .alias(
                "loop-a@test.example",
                ["loop-b@test.example", "user@test.example"],
            )
            .alias(
                "loop-b@test.example",
                ["loop-a@test.example", "user2@test.example"],
            )
            .alias(
                "fwd@test.example",
                ["someone@elsewhere.example", "solo@test.example"],
            )
            .alias("catch@open.example", ["anyone@open.example"])
            .relocated("moved@test.example", "moved@elsewhere.example");
        match b.build() {
            Ok(d) => d,
            Err(e) => panic!("sample directory rejected: {e:?}"),
        }
    }

    #[test]
    fn local_parts_are_one_mailbox_in_any_unicode_form() {
        let nfc = "caf\u{e9}";
        let nfd = "cafe\u{301}";
        assert_eq!(local_key(nfd), nfc);
        assert_eq!(local_key("CAF\u{c9}"), nfc);
        assert_eq!(canonical_local_part(nfd).unwrap(), nfc);
        let mut b = DirectoryBuilder::default();
        b.domain("test.example")
            .mailbox(format!("{nfd}@test.example"), None);
        let d = b.build().unwrap();
        for given in [nfc, nfd, "CAFE\u{301}"] {
            assert_eq!(
                d.resolve(given, Some("test.example")),
                deliver(&[local(&format!("{nfc}@test.example"))]),
                "{given:?}"
            );
        }
    }

    #[test]
    fn resolution_table() {
        let d = sample();
        let pm = local("postmaster@test.example");
        let cases: &[(&str, Option<&str>, Resolution)] = &[
            // mailbox, any case (stored lower-case)
            (
                "user",
                Some("test.example"),
                deliver(&[local("user@test.example")]),
            ),
            (
                "USER",
                Some("TEST.example"),
                deliver(&[local("user@test.example")]),
            ),
            // alias -> members
            (
                "list",
                Some("test.example"),
                deliver(&[local("user@test.example"), local("user2@test.example")]),
            ),
            // nested alias, deduplicated
            (
                "nested",
                Some("test.example"),
                deliver(&[local("user@test.example"), local("user2@test.example")]),
            ),
            // alias loop terminates
            (
                "loop-a",
                Some("test.example"),
                deliver(&[local("user2@test.example"), local("user@test.example")]),
            ),
            // remote member (RFC 5321 3.4: 251 will forward)
            (
                "fwd",
                Some("test.example"),
                deliver(&[
                    remote("someone@elsewhere.example"),
                    local("solo@test.example"),
                ]),
            ),
            // relocated (RFC 5321 3.4: 551)
            (
                "moved",
                Some("test.example"),
                Resolution::Relocated("moved@elsewhere.example".to_owned()),
            ),
            // unknown user in a strict domain
            ("nobody", Some("test.example"), Resolution::UnknownUser),
            // catch-all domain
            (
                "anything",
                Some("open.example"),
                deliver(&[local("anything@open.example")]),
            ),
            (
                "catch",
                Some("open.example"),
                deliver(&[local("anyone@open.example")]),
            ),
            // postmaster forms (RFC 5321 4.5.1), strict domain included
            ("postmaster", None, deliver(std::slice::from_ref(&pm))),
            ("PostMaster", None, deliver(std::slice::from_ref(&pm))),
            (
                "POSTMASTER",
                Some("test.example"),
                deliver(std::slice::from_ref(&pm)),
            ),
            (
                "postmaster",
                Some("OPEN.example"),
                deliver(std::slice::from_ref(&pm)),
            ),
            ("user", None, Resolution::UnknownUser),
            // foreign domain
            ("user", Some("elsewhere.example"), Resolution::NotLocal),
            (
                "postmaster",
                Some("elsewhere.example"),
                Resolution::NotLocal,
            ),
        ];
        for (l, dom, want) in cases {
            assert_eq!(&d.resolve(l, *dom), want, "resolve({l:?}, {dom:?})");
        }
    }

    #[test]
    fn configured_postmaster_alias_and_explicit_postmaster_entries() {
        let mut b = Directory::builder();
        b.domain("a.example")
            .domain("b.example")
            .mailbox("admin@a.example", None)
            .mailbox("ops@a.example", None)
            .mailbox("x@b.example", None)
            .alias(
                "staff@a.example",
                ["admin@a.example", "ops@a.example", "postmaster@b.example"],
            )
            .alias("postmaster@b.example", ["ops@a.example"])
            .postmaster("STAFF@a.example");
        let d = b.build().unwrap();
        assert_eq!(d.postmaster(), "staff@a.example");
        let staff = deliver(&[local("admin@a.example"), local("ops@a.example")]);
        assert_eq!(d.resolve("postmaster", None), staff);
        assert_eq!(d.resolve("postmaster", Some("a.example")), staff);
        // An explicit postmaster@b.example alias wins for that domain.
        assert_eq!(
            d.resolve("postmaster", Some("b.example")),
            deliver(&[local("ops@a.example")])
        );

        // A remote postmaster.
        let mut b = Directory::builder();
        b.domain("a.example").postmaster("boss@elsewhere.example");
        let d = b.build().unwrap();
        assert_eq!(
            d.resolve("Postmaster", Some("a.example")),
            deliver(&[remote("boss@elsewhere.example")])
        );
        assert_eq!(
            d.vrfy("postmaster"),
            Lookup::Mailbox {
                address: "boss@elsewhere.example".to_owned(),
                full_name: None
            }
        );
    }

    #[test]
    fn default_is_localhost_catch_all() {
        let d = Directory::default();
        let mut b = Directory::builder();
        b.domain("localhost");
        assert_eq!(b.build().unwrap(), d);
        assert!(d.is_local_domain("LOCALHOST"));
        assert!(d.is_catch_all("localhost"));
        assert_eq!(
            d.resolve("joe", Some("localhost")),
            deliver(&[local("joe@localhost")])
        );
        assert_eq!(
            d.resolve("postmaster", None),
            deliver(&[local("postmaster@localhost")])
        );
    }

    #[test]
    fn vrfy_and_expn_table() {
        let d = sample();
        let mbox = |a: &str, n: Option<&str>| Lookup::Mailbox {
            address: a.to_owned(),
            full_name: n.map(str::to_owned),
        };
        let both = Lookup::Ambiguous(vec![
            "user2@test.example".to_owned(),
            "user@test.example".to_owned(),
        ]);
        let members = Lookup::List(vec![
            "user@test.example".to_owned(),
            "user2@test.example".to_owned(),
        ]);
        // (query, vrfy, expn) -- RFC 5321 3.5.
        let cases: Vec<(&str, Lookup, Lookup)> = vec![
            (
                "user@test.example",
                mbox("user@test.example", Some("Fred Smith")),
                mbox("user@test.example", Some("Fred Smith")),
            ),
            (
                "<USER@Test.Example>",
                mbox("user@test.example", Some("Fred Smith")),
                mbox("user@test.example", Some("Fred Smith")),
            ),
            (
                "Fred Smith <user@test.example>",
                mbox("user@test.example", Some("Fred Smith")),
                mbox("user@test.example", Some("Fred Smith")),
            ),
            (
                "user",
                mbox("user@test.example", Some("Fred Smith")),
                mbox("user@test.example", Some("Fred Smith")),
            ),
            (
                "fred smith",
                mbox("user@test.example", Some("Fred Smith")),
                mbox("user@test.example", Some("Fred Smith")),
            ),
            (
                "Harry",
                mbox("user2@test.example", Some("Harry Smith")),
                mbox("user2@test.example", Some("Harry Smith")),
            ),
            // 3.5.1: "553 User ambiguous"
            ("Smith", both.clone(), both),
            // 3.5.2: VRFY of a list is positive, EXPN gives its members
            (
                "list@test.example",
                mbox("list@test.example", None),
                members.clone(),
            ),
            ("list", mbox("list@test.example", None), members),
            (
                "moved@test.example",
                Lookup::Relocated("moved@elsewhere.example".to_owned()),
                Lookup::Relocated("moved@elsewhere.example".to_owned()),
            ),
            ("nobody@test.example", Lookup::Unknown, Lookup::Unknown),
            (
                "nobody",
                mbox("nobody@open.example", None),
                mbox("nobody@open.example", None),
            ),
            ("Jones Jones", Lookup::Unknown, Lookup::Unknown),
            ("", Lookup::Unknown, Lookup::Unknown),
            (
                "postmaster",
                mbox("postmaster@test.example", None),
                mbox("postmaster@test.example", None),
            ),
            (
                "postmaster@open.example",
                mbox("postmaster@test.example", None),
                mbox("postmaster@test.example", None),
            ),
            ("x@elsewhere.example", Lookup::NotLocal, Lookup::NotLocal),
            (
                "any@open.example",
                mbox("any@open.example", None),
                mbox("any@open.example", None),
            ),
        ];
        for (query, vrfy, expn) in cases {
            assert_eq!(d.vrfy(query), vrfy, "vrfy({query:?})");
            assert_eq!(d.expn(query), expn, "expn({query:?})");
        }
    }

    /// Issue #12: domains are compared after UTS 46 mapping, so mail for an A-label, a
    /// U-label or another case of a local domain reaches the same mailbox.
    #[test]
    fn a_local_domain_is_found_however_it_is_written() {
        let mut b = Directory::builder();
        b.domain("Bücher.example")
            .mailbox("user@xn--bcher-kva.example", None);
        let d = b.build().unwrap();
        for domain in ["bücher.example", "BÜCHER.EXAMPLE", "xn--bcher-kva.example"] {
            assert!(d.is_local_domain(domain), "{domain}");
            match d.resolve("User", Some(domain)) {
                Resolution::Deliver(targets) => assert_eq!(targets.len(), 1, "{domain}"),
                other => panic!("{domain}: {other:?}"),
            }
        }
        assert_eq!(
            d.resolve("user", Some("xn--zz.example")),
            Resolution::NotLocal
        );
    }

    #[test]
    fn address_syntax() {
        use yizhan_proto::AddressError as Syntax;
        let syntax = |e| Err(AddressError::Syntax(e));
        let cases: &[(&str, Result<&str, AddressError>)] = &[
            ("User@Example.COM", Ok("user@example.com")),
            ("a.b+tag@x-y.example", Ok("a.b+tag@x-y.example")),
            ("üser@bücher.example", Ok("üser@bücher.example")), // RFC 6531
            // UTS 46: one domain, however it is written.
            ("user@BÜCHER.example", Ok("user@bücher.example")),
            ("user@xn--bcher-kva.example", Ok("user@bücher.example")),
            ("user@xn--zz.example", Err(AddressError::Idna)),
            ("user", Err(AddressError::MissingAt)),
            ("@example.com", syntax(Syntax::LocalPart("empty"))),
            ("user@", syntax(Syntax::Domain("empty"))),
            (".user@example.com", syntax(Syntax::LocalPart("empty atom"))),
            ("a..b@example.com", syntax(Syntax::LocalPart("empty atom"))),
            (
                "a b@example.com",
                syntax(Syntax::LocalPart("invalid character")),
            ),
            ("\"ab\"@example.com", Err(AddressError::Quoted)),
            (
                "user@exa_mple.com",
                syntax(Syntax::Domain("invalid character")),
            ),
            ("user@example..com", syntax(Syntax::Domain("empty label"))),
            ("user@example.com.", syntax(Syntax::Domain("trailing dot"))),
            (
                "user@-example.com",
                syntax(Syntax::Domain("label starts or ends with a hyphen")),
            ),
            (
                "user@[127.0.0.1]",
                syntax(Syntax::Domain("invalid character")),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                canonical_address(input),
                want.clone().map(str::to_owned),
                "{input:?}"
            );
        }
        // RFC 5321 4.5.3.1.1 / 4.5.3.1.2
        assert_eq!(
            canonical_address(&format!("{}@x.example", "a".repeat(65))),
            Err(AddressError::Syntax(Syntax::TooLong("local part")))
        );
        assert!(canonical_address(&format!("{}@x.example", "a".repeat(64))).is_ok());
        assert_eq!(
            canonical_domain(&format!("{}.example", "a".repeat(64))),
            Err(AddressError::Syntax(Syntax::TooLong("domain label")))
        );
        assert_eq!(
            canonical_domain(&["abcdefghi"; 26].join(".")),
            Err(AddressError::Syntax(Syntax::TooLong("domain")))
        );
    }

    #[test]
    fn build_errors_table() {
        type Setup = fn(&mut DirectoryBuilder);
        let cases: Vec<(&str, Setup, Vec<DirectoryError>)> = vec![
            (
                "bad domain",
                |b| {
                    b.domain("a..example");
                },
                vec![DirectoryError {
                    entry: Entry::Domain(0),
                    problem: Problem::Domain(AddressError::Syntax(
                        yizhan_proto::AddressError::Domain("empty label"),
                    )),
                }],
            ),
            (
                "duplicate domain",
                |b| {
                    b.domain("a.example").domain("A.example");
                },
                vec![DirectoryError {
                    entry: Entry::Domain(1),
                    problem: Problem::DuplicateDomain {
                        domain: "a.example".into(),
                        first: Entry::Domain(0),
                    },
                }],
            ),
            (
                "no domain",
                |_| {},
                vec![DirectoryError {
                    entry: Entry::Postmaster,
                    problem: Problem::NoDomain,
                }],
            ),
            (
                "bad mailbox",
                |b| {
                    b.domain("a.example").mailbox("nope", None);
                },
                vec![DirectoryError {
                    entry: Entry::Mailbox(0),
                    problem: Problem::Address(AddressError::MissingAt),
                }],
            ),
            (
                "mailbox not local",
                |b| {
                    b.domain("a.example").mailbox("u@b.example", None);
                },
                vec![DirectoryError {
                    entry: Entry::Mailbox(0),
                    problem: Problem::NotLocalDomain {
                        address: "u@b.example".into(),
                    },
                }],
            ),
            (
                "duplicate mailbox",
                |b| {
                    b.domain("a.example")
                        .mailbox("u@a.example", None)
                        .mailbox("U@a.example", None);
                },
                vec![DirectoryError {
                    entry: Entry::Mailbox(1),
                    problem: Problem::DuplicateAddress {
                        address: "u@a.example".into(),
                        first: Entry::Mailbox(0),
                    },
                }],
            ),
            (
                "bad full name",
                |b| {
                    b.domain("a.example")
                        .mailbox("u@a.example", Some("x\r\ny".into()));
                },
                vec![DirectoryError {
                    entry: Entry::MailboxFullName(0),
                    problem: Problem::BadFullName,
                }],
            ),
            (
                "alias same as mailbox",
                |b| {
                    b.domain("a.example")
                        .mailbox("u@a.example", None)
                        .alias("u@a.example", ["v@b.example"]);
                },
                vec![DirectoryError {
                    entry: Entry::Alias(0),
                    problem: Problem::DuplicateAddress {
                        address: "u@a.example".into(),
                        first: Entry::Mailbox(0),
                    },
                }],
            ),
            (
                "empty alias",
                |b| {
                    b.domain("a.example")
                        .alias("l@a.example", Vec::<String>::new());
                },
                vec![DirectoryError {
                    entry: Entry::AliasMembers(0),
                    problem: Problem::EmptyAlias,
                }],
            ),
            (
                "bad member",
                |b| {
                    b.domain("a.example")
                        .alias("l@a.example", ["ok@x.example", "bad"]);
                },
                vec![DirectoryError {
                    entry: Entry::AliasMember {
                        alias: 0,
                        member: 1,
                    },
                    problem: Problem::Address(AddressError::MissingAt),
                }],
            ),
            (
                "unknown member in strict domain",
                |b| {
                    b.domain("a.example")
                        .mailbox("u@a.example", None)
                        .alias("l@a.example", ["u@a.example", "ghost@a.example"]);
                },
                vec![DirectoryError {
                    entry: Entry::AliasMember {
                        alias: 0,
                        member: 1,
                    },
                    problem: Problem::UnknownMember {
                        address: "ghost@a.example".into(),
                    },
                }],
            ),
            (
                "relocated member",
                |b| {
                    b.domain("a.example")
                        .relocated("m@a.example", "m@b.example")
                        .alias("l@a.example", ["m@a.example"]);
                },
                vec![DirectoryError {
                    entry: Entry::AliasMember {
                        alias: 0,
                        member: 0,
                    },
                    problem: Problem::RelocatedMember {
                        address: "m@a.example".into(),
                        new_address: "m@b.example".into(),
                    },
                }],
            ),
            (
                "loop only",
                |b| {
                    b.domain("a.example")
                        .alias("x@a.example", ["y@a.example"])
                        .alias("y@a.example", ["x@a.example"]);
                },
                vec![
                    DirectoryError {
                        entry: Entry::Alias(0),
                        problem: Problem::LoopOnly,
                    },
                    DirectoryError {
                        entry: Entry::Alias(1),
                        problem: Problem::LoopOnly,
                    },
                ],
            ),
            (
                "relocated is a mailbox",
                |b| {
                    b.domain("a.example")
                        .mailbox("u@a.example", None)
                        .relocated("u@a.example", "u@b.example");
                },
                vec![DirectoryError {
                    entry: Entry::Relocated(0),
                    problem: Problem::DuplicateAddress {
                        address: "u@a.example".into(),
                        first: Entry::Mailbox(0),
                    },
                }],
            ),
            (
                "relocated not local",
                |b| {
                    b.domain("a.example")
                        .relocated("u@c.example", "u@b.example");
                },
                vec![DirectoryError {
                    entry: Entry::Relocated(0),
                    problem: Problem::NotLocalDomain {
                        address: "u@c.example".into(),
                    },
                }],
            ),
            (
                "relocated bad new address",
                |b| {
                    b.domain("a.example").relocated("u@a.example", "u@");
                },
                vec![DirectoryError {
                    entry: Entry::RelocatedNewAddress(0),
                    problem: Problem::Address(AddressError::Syntax(
                        yizhan_proto::AddressError::Domain("empty"),
                    )),
                }],
            ),
            (
                "relocated to itself",
                |b| {
                    b.domain("a.example")
                        .relocated("u@a.example", "U@a.example");
                },
                vec![DirectoryError {
                    entry: Entry::RelocatedNewAddress(0),
                    problem: Problem::RelocatedToItself,
                }],
            ),
            (
                "relocated postmaster",
                |b| {
                    b.domain("a.example")
                        .relocated("postmaster@a.example", "p@b.example");
                },
                vec![DirectoryError {
                    entry: Entry::Relocated(0),
                    problem: Problem::RelocatedPostmaster,
                }],
            ),
            (
                "unknown postmaster",
                |b| {
                    b.domain("a.example")
                        .mailbox("u@a.example", None)
                        .postmaster("boss@a.example");
                },
                vec![DirectoryError {
                    entry: Entry::Postmaster,
                    problem: Problem::UnknownPostmaster {
                        address: "boss@a.example".into(),
                    },
                }],
            ),
            (
                "bad postmaster",
                |b| {
                    b.domain("a.example").postmaster("boss");
                },
                vec![DirectoryError {
                    entry: Entry::Postmaster,
                    problem: Problem::Address(AddressError::MissingAt),
                }],
            ),
        ];
        for (name, setup, want) in cases {
            let mut b = Directory::builder();
            setup(&mut b);
            assert_eq!(b.build().err(), Some(want), "{name}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut b = Directory::builder();
        b.domain("a.example")
            .mailbox("bad", None)
            .mailbox("u@b.example", None)
            .alias("l@a.example", ["also bad"])
            .relocated("r@a.example", "");
        let errors = b.build().unwrap_err();
        let entries: Vec<String> = errors.iter().map(|e| e.entry.to_string()).collect();
        assert_eq!(
            entries,
            [
                "mailbox[0].address",
                "mailbox[1].address",
                "alias[0].members[0]",
                "relocated[0].new_address"
            ]
        );
        assert_eq!(
            errors[1].to_string(),
            "mailbox[1].address: u@b.example is not in a local domain (add its domain as a [[domain]])"
        );
    }

    #[test]
    fn strict_and_catch_all_domains() {
        let d = sample();
        assert!(!d.is_catch_all("test.example"));
        assert!(d.is_catch_all("open.example"));
        assert!(!d.is_catch_all("elsewhere.example"));
        assert_eq!(d.domains(), ["test.example", "open.example"]);
        assert_eq!(d.mailboxes().count(), 3);
        assert_eq!(d.aliases().count(), 6);
        assert_eq!(
            d.relocated().collect::<Vec<_>>(),
            [("moved@test.example", "moved@elsewhere.example")]
        );
    }
}
