//! The validators of the directory (`[[domain]]`, `[[mailbox]]`, `[[alias]]`,
//! `[[relocated]]`, `postmaster`), the mailboxes' password hashes and their TURN domains.

use std::collections::HashMap;

use yizhan_server::auth::Credentials;
use yizhan_server::directory::{Directory, DirectoryError, Entry, canonical_address};
use yizhan_server::settings::Settings;

use super::check::Validator;
use super::raw::RawConfig;
use super::values::DomainName;

impl RawConfig {
    /// `[[mailbox]] turn_domains`: each remote domain owned by one user with a password.
    pub(super) fn turn_domains(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let mut owners: HashMap<String, usize> = HashMap::new();
        for (i, m) in self.mailbox.iter().enumerate() {
            let Some(list) = &m.turn_domains else {
                continue;
            };
            let key = format!("mailbox[{i}].turn_domains");
            if m.password.is_none() {
                v.problem(
                    &key,
                    Some(list.span().start),
                    "TURN is only for authenticated users: this mailbox needs a password",
                );
            }
            let Ok(user) = canonical_address(m.address.get_ref()) else {
                continue;
            };
            let mut domains = Vec::new();
            for (j, item) in list.get_ref().iter().enumerate() {
                let at = Some(item.span().start);
                let Some(DomainName(name)) = v.parse(&format!("{key}[{j}]"), Some(item)) else {
                    continue;
                };
                if settings.directory.is_local_domain(&name) {
                    v.problem(
                        format!("{key}[{j}]"),
                        at,
                        format!("{name} is a local domain; its mail is delivered here"),
                    );
                } else if let Some(other) = owners.insert(name.clone(), i) {
                    v.problem(
                        format!("{key}[{j}]"),
                        at,
                        format!("{name} is already owned by mailbox[{other}]"),
                    );
                } else {
                    domains.push(name);
                }
            }
            if !domains.is_empty() {
                settings.turn_domains.insert(user.to_string(), domains);
            }
        }
    }

    /// `[[domain]] deliver = "lmtp"` with its `lmtp` endpoint: the domain's mail goes to a mail
    /// store (Dovecot) over LMTP instead of Maildirs here.
    pub(super) fn lmtp_domains(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        for (i, d) in self.domain.iter().enumerate() {
            let key = |name: &str| format!("domain[{i}].{name}");
            let lmtp = match d.deliver.as_ref().map(|m| (m, m.get_ref().as_str())) {
                None | Some((_, "maildir")) => false,
                Some((_, "lmtp")) => true,
                Some((m, other)) => {
                    let reason =
                        format!("unknown delivery {other:?} (expected \"maildir\" or \"lmtp\")");
                    v.problem(key("deliver"), Some(m.span().start), reason);
                    continue;
                }
            };
            match (lmtp, &d.lmtp) {
                (true, Some(endpoint)) => {
                    match endpoint
                        .get_ref()
                        .parse::<yizhan_delivery::lmtp::LmtpEndpoint>()
                    {
                        Ok(e) => {
                            let name = d.name.get_ref().to_ascii_lowercase();
                            settings.delivery.lmtp.insert(name, e);
                        }
                        Err(reason) => v.problem(key("lmtp"), Some(endpoint.span().start), reason),
                    }
                }
                (true, None) => v.problem(
                    key("deliver"),
                    d.deliver.as_ref().map(|m| m.span().start),
                    "\"lmtp\" needs lmtp = \"unix:/run/dovecot/lmtp\" or \"host:port\"",
                ),
                (false, Some(endpoint)) => v.problem(
                    key("lmtp"),
                    Some(endpoint.span().start),
                    "has no effect without deliver = \"lmtp\"",
                ),
                (false, None) => {}
            }
        }
    }

    /// The password hashes of `[[mailbox]]` entries that have one.
    pub(super) fn credentials(&self, v: &mut Validator<'_>) -> Credentials {
        let mut credentials = Credentials::default();
        for (i, m) in self.mailbox.iter().enumerate() {
            let Some(password) = &m.password else {
                continue;
            };
            if let Err(e) = credentials.insert(m.address.get_ref(), password.get_ref()) {
                // A bad address is reported by the directory already.
                if matches!(e, yizhan_server::auth::CredentialError::BadHash(_)) {
                    v.problem(
                        format!("mailbox[{i}].password"),
                        Some(password.span().start),
                        format!("{e}; make one with `yizhan hash-password`"),
                    );
                }
            }
        }
        credentials
    }

    /// Builds the directory; `None` (with problems recorded) if it is invalid.
    pub(super) fn directory(&self, v: &mut Validator<'_>) -> Option<Directory> {
        let mut b = Directory::builder();
        if self.domain.is_empty() {
            for name in Settings::default().directory.domains() {
                b.domain(name.as_str());
            }
        }
        for d in &self.domain {
            b.domain(d.name.get_ref().as_str());
        }
        for m in &self.mailbox {
            let full_name = m.full_name.as_ref().map(|n| n.get_ref().clone());
            b.mailbox(m.address.get_ref().as_str(), full_name);
        }
        for a in &self.alias {
            let members = a.members.get_ref().iter().map(|m| m.get_ref().as_str());
            b.alias(a.address.get_ref().as_str(), members);
        }
        for r in &self.relocated {
            b.relocated(
                r.address.get_ref().as_str(),
                r.new_address.get_ref().as_str(),
            );
        }
        if let Some(p) = &self.postmaster {
            b.postmaster(p.get_ref().as_str());
        }
        match b.build() {
            Ok(directory) => Some(directory),
            Err(errors) => {
                for DirectoryError { entry, problem } in errors {
                    v.problem(entry.to_string(), self.span_of(entry), problem.to_string());
                }
                None
            }
        }
    }

    /// Where a directory entry's value starts in the file.
    fn span_of(&self, entry: Entry) -> Option<usize> {
        let span = match entry {
            Entry::Domain(i) => self.domain.get(i)?.name.span(),
            Entry::Mailbox(i) => self.mailbox.get(i)?.address.span(),
            Entry::MailboxFullName(i) => self.mailbox.get(i)?.full_name.as_ref()?.span(),
            Entry::Alias(i) => self.alias.get(i)?.address.span(),
            Entry::AliasMembers(i) => self.alias.get(i)?.members.span(),
            Entry::AliasMember { alias, member } => {
                self.alias.get(alias)?.members.get_ref().get(member)?.span()
            }
            Entry::Relocated(i) => self.relocated.get(i)?.address.span(),
            Entry::RelocatedNewAddress(i) => self.relocated.get(i)?.new_address.span(),
            Entry::Postmaster => self.postmaster.as_ref()?.span(),
        };
        Some(span.start)
    }
}
