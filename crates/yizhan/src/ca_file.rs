//! A PEM file of extra certificate authorities (a private CA), as `yizhan probe --ca-file` and
//! `[store] ca_file` take it: read once, every certificate in it usable as a trust anchor, or
//! why not.

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// The authorities in `path`; an error names the file and what is wrong with it.
pub fn load(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE block found", path.display()));
    }
    let (_, ignored) = RootCertStore::empty().add_parsable_certificates(certs.iter().cloned());
    if ignored > 0 {
        return Err(format!(
            "{}: {ignored} certificate(s) cannot be used as an authority",
            path.display()
        ));
    }
    Ok(certs)
}
