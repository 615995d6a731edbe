//! `yizhan dkim generate` and `yizhan dkim check`: a DKIM key made for a domain, the DNS record
//! to publish for it, and whether the published record matches the key.
//!
//! Keys are made with `rcgen` on `aws-lc-rs` (never the RustCrypto `rsa` crate, see
//! shared/research/ecosystem.md): RSA 2048 (`rsa-sha256`, the default, verified everywhere) or
//! Ed25519 (`ed25519-sha256`, RFC 8463).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine as _;
use rcgen::{KeyPair, PublicKeyData as _};
use yizhan_server::dkim::Algorithm;
use yizhan_server::settings::Settings;

use crate::privileges;
use crate::sendmail::LoadSettings;

/// `yizhan dkim`.
#[derive(Debug, clap::Args)]
pub struct DkimArgs {
    /// The configuration file (default: $YIZHAN_CONFIG, else /etc/yizhan/yizhan.toml if it
    /// exists, else the embedded default).
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: DkimCommand,
}

/// The DKIM operations.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum DkimCommand {
    /// Make a private key for DOMAIN and print the DNS TXT record to publish.
    Generate {
        /// The signing domain (the domain of the From: addresses to sign).
        #[arg(long)]
        domain: String,
        /// The selector: the key's name in DNS (`SELECTOR._domainkey.DOMAIN`).
        #[arg(long)]
        selector: String,
        /// `rsa-sha256` (2048-bit RSA) or `ed25519-sha256`.
        #[arg(long, default_value = "rsa-sha256")]
        algorithm: String,
        /// Where to write the key (PEM, mode 0600; default:
        /// DATA_DIR/dkim/DOMAIN.SELECTOR.pem). An existing file is never replaced.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Look up SELECTOR._domainkey.DOMAIN and say whether it matches the configured key.
    Check {
        /// The signing domain (a `[[dkim]]` domain).
        #[arg(long)]
        domain: String,
        /// The selector (default: the configured one).
        #[arg(long)]
        selector: Option<String>,
    },
}

/// `yizhan dkim ...`.
pub fn main(args: DkimArgs, load: LoadSettings<'_>) -> ExitCode {
    let settings = match crate::sendmail::settings_or_exit(load, args.config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let outcome = match args.command {
        DkimCommand::Generate {
            domain,
            selector,
            algorithm,
            key,
        } => generate(&settings, &domain, &selector, &algorithm, key),
        DkimCommand::Check { domain, selector } => check(&settings, &domain, selector.as_deref()),
    };
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("yizhan: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the key, writes it, and returns what to publish and configure.
fn generate(
    settings: &Settings,
    domain: &str,
    selector: &str,
    algorithm: &str,
    key: Option<PathBuf>,
) -> Result<String, String> {
    let algorithm = Algorithm::from_name(algorithm).ok_or_else(|| {
        format!("unknown algorithm {algorithm:?} (expected \"rsa-sha256\" or \"ed25519-sha256\")")
    })?;
    let domain = yizhan_server::directory::canonical_domain(domain)
        .map_err(|e| format!("{domain:?} is not a domain name: {e}"))?;
    if selector.is_empty()
        || !selector
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        return Err(format!(
            "{selector:?} is not a selector (letters, digits and hyphens)"
        ));
    }
    let pair = match algorithm {
        Algorithm::RsaSha256 => KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256),
        Algorithm::Ed25519Sha256 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
    }
    .map_err(|e| format!("cannot make the key: {e}"))?;
    let path = key.unwrap_or_else(|| {
        settings
            .data_dir
            .join("dkim")
            .join(format!("{domain}.{selector}.pem"))
    });
    write_key(&path, &pair.serialize_pem(), settings)?;
    let record = dns_record(algorithm, &public_key(&pair, algorithm));
    Ok(format!(
        "private key written to {path}\n\
         \n\
         publish this DNS record:\n\
         {selector}._domainkey.{domain}. IN TXT {record}\n\
         \n\
         and add to the configuration (then `yizhan reload`):\n\
         [[dkim]]\n\
         domain = \"{domain}\"\n\
         selector = \"{selector}\"\n\
         key = \"{path}\"\n\
         algorithm = \"{algorithm}\"\n",
        path = path.display()
    ))
}

/// Compares the published record of the configured key for `domain` with the key.
fn check(settings: &Settings, domain: &str, selector: Option<&str>) -> Result<String, String> {
    let key = settings
        .dkim
        .for_domain(domain)
        .ok_or_else(|| format!("no [[dkim]] key for {domain} in the configuration"))?;
    let selector = selector.unwrap_or(&key.selector);
    let pem = std::fs::read_to_string(&key.key_path)
        .map_err(|e| format!("cannot read {}: {e}", key.key_path.display()))?;
    let pair = KeyPair::from_pem(&pem)
        .map_err(|e| format!("{}: not a private key: {e}", key.key_path.display()))?;
    let want = base64::engine::general_purpose::STANDARD.encode(public_key(&pair, key.algorithm));
    let name = format!("{selector}._domainkey.{}", key.domain);
    let records = lookup_txt(settings, &name)?;
    let published: Vec<&String> = records.iter().filter(|r| r.contains("p=")).collect();
    let Some(record) = published.first() else {
        return Err(format!(
            "{name}: no DKIM record published; publish:\n{name}. IN TXT {}",
            dns_record(key.algorithm, &public_key(&pair, key.algorithm))
        ));
    };
    let tag = |t: &str| {
        record.split(';').find_map(|part| {
            let (k, v) = part.split_once('=')?;
            (k.trim() == t).then(|| v.split_whitespace().collect::<String>())
        })
    };
    let p = tag("p").unwrap_or_default();
    let k = tag("k").unwrap_or_else(|| "rsa".to_owned());
    if p == want && k == key.algorithm.key_type() {
        Ok(format!(
            "{name}: the published record matches {}\n",
            key.key_path.display()
        ))
    } else if p.is_empty() {
        Err(format!(
            "{name}: the published record revokes the key (empty p=)"
        ))
    } else {
        Err(format!(
            "{name}: the published record does not match {} (k={k}); publish:\n{name}. IN TXT {}",
            key.key_path.display(),
            dns_record(key.algorithm, &public_key(&pair, key.algorithm))
        ))
    }
}

/// The TXT records of `name`, from `delivery.dns_servers` (or the system's resolver).
fn lookup_txt(settings: &Settings, name: &str) -> Result<Vec<String>, String> {
    use yizhan_delivery::mx::HickoryResolver;
    let d = &settings.delivery;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let resolver = if d.dns_servers.is_empty() {
            HickoryResolver::from_system()
        } else {
            HickoryResolver::with_servers(&d.dns_servers, d.dns_timeout)
        }
        .map_err(|e| format!("no DNS resolver: {e}"))?;
        resolver.txt(name).await.map_err(|e| format!("{name}: {e}"))
    })
}

/// The `p=` bytes: the SubjectPublicKeyInfo for RSA (RFC 6376 3.6.1), the raw 32-byte key
/// for Ed25519 (RFC 8463 4.2).
fn public_key(pair: &KeyPair, algorithm: Algorithm) -> Vec<u8> {
    match algorithm {
        Algorithm::RsaSha256 => pair.subject_public_key_info(),
        Algorithm::Ed25519Sha256 => pair.public_key_raw().to_vec(),
    }
}

/// The TXT record's text, split into quoted strings of at most 255 bytes (RFC 1035 3.3.14;
/// an RSA 2048 key does not fit in one).
pub fn dns_record(algorithm: Algorithm, public_key: &[u8]) -> String {
    let p = base64::engine::general_purpose::STANDARD.encode(public_key);
    let text = format!("v=DKIM1; k={}; p={p}", algorithm.key_type());
    text.as_bytes()
        .chunks(250)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `pem` to a new file `path` (0600; its folder 0700 when made). Run as root, the file
/// goes to the service account, which reads it after dropping root.
fn write_key(path: &Path, pem: &str, settings: &Settings) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{shown} exists; a key is never replaced (choose another --selector)")
            }
            _ => format!("cannot write {shown}: {e}"),
        })?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {shown}: {e}"))?;
    if let Ok(Some(account)) = privileges::account(&settings.user, settings.group.as_deref()) {
        std::os::unix::fs::lchown(path, Some(account.uid), Some(account.gid))
            .map_err(|e| format!("cannot give {shown} to {}: {e}", account.name))?;
        if let Some(dir) = path.parent() {
            let _ = std::os::unix::fs::lchown(dir, Some(account.uid), Some(account.gid));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_split_into_strings_of_at_most_255_bytes() {
        let record = dns_record(Algorithm::RsaSha256, &[7; 294]);
        assert!(record.starts_with("\"v=DKIM1; k=rsa; p=Bwc"), "{record}");
        for part in record.split("\" \"") {
            assert!(part.trim_matches('"').len() <= 255, "{part}");
        }
        let ed = dns_record(Algorithm::Ed25519Sha256, &[1; 32]);
        assert_eq!(ed.matches('"').count(), 2, "one string: {ed}");
        assert!(ed.contains("k=ed25519; p="), "{ed}");
    }

    #[test]
    fn generated_keys_load_as_signing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            data_dir: dir.path().to_path_buf(),
            user: "no-such-account-here".into(),
            ..Settings::default()
        };
        for algorithm in Algorithm::ALL {
            let text = generate(&settings, "Example.TEST", "s1", algorithm.as_str(), None)
                .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
            let path = dir.path().join("dkim/example.test.s1.pem");
            assert!(
                text.contains("s1._domainkey.example.test. IN TXT \"v=DKIM1;"),
                "{text}"
            );
            let mode = std::fs::metadata(&path).unwrap().permissions();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
                0o600
            );
            let key = yizhan_server::dkim::DkimKey::load(
                "example.test",
                "s1",
                &path,
                algorithm,
                vec!["From".into()],
            )
            .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
            let field = key
                .sign(b"From: a@example.test\r\nSubject: x\r\n\r\nhi\r\n")
                .unwrap();
            assert!(field.starts_with("DKIM-Signature: v=1; a="), "{field}");
            assert!(field.contains(algorithm.as_str()), "{field}");
            // Never replaced.
            let again = generate(&settings, "example.test", "s1", algorithm.as_str(), None);
            assert!(again.unwrap_err().contains("never replaced"));
            std::fs::remove_file(&path).unwrap();
        }
    }
}
