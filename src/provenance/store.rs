//! The Notary Project trust store: `x509/<type>/<name>/` directories of certificate files (PEM,
//! one or more certificates, or a single DER certificate) under one root directory, as
//! `notation cert add` lays them out. Only the stores a trust policy names are read.
//!
//! As notation's `truststore` package: a store must exist and hold at least one certificate;
//! every entry must be a regular file (no subdirectories, no symlinks); `ca` and
//! `signingAuthority` stores hold CA certificates or self-signed signing certificates; `tsa`
//! stores hold self-signed root CA certificates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ProvenanceError;
use super::policy::{StoreKind, StoreRef};
use super::x509::Cert;

/// Certificate files larger than this are refused: a trust store is a handful of roots.
const MAX_CERT_FILE: u64 = 1024 * 1024;

/// The certificates of every store a trust policy names, by store.
#[derive(Debug, Default)]
pub(super) struct TrustStore {
    stores: BTreeMap<StoreRef, Vec<Cert>>,
}

impl TrustStore {
    /// Reads the named stores under `root`. Errors name the file or directory and what is
    /// wrong, never a certificate's bytes.
    pub(super) fn load(root: &Path, wanted: &[StoreRef]) -> Result<TrustStore, ProvenanceError> {
        let mut stores = BTreeMap::new();
        for store in wanted {
            if stores.contains_key(store) {
                continue;
            }
            let dir = root.join("x509").join(store.kind.dir()).join(&store.name);
            let invalid = |path: &Path, message: String| ProvenanceError::Invalid { path: path.to_path_buf(), message };
            let entries = std::fs::read_dir(&dir).map_err(|source| ProvenanceError::Read { path: dir.clone(), source })?;
            let mut files: Vec<PathBuf> = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|source| ProvenanceError::Read { path: dir.clone(), source })?;
                let path = entry.path();
                let meta = std::fs::symlink_metadata(&path).map_err(|source| ProvenanceError::Read { path: path.clone(), source })?;
                if !meta.is_file() {
                    return Err(invalid(&path, "a trust store holds only regular certificate files (no directories or symlinks)".into()));
                }
                if meta.len() > MAX_CERT_FILE {
                    return Err(invalid(&path, format!("larger than {MAX_CERT_FILE} bytes: not a certificate file")));
                }
                files.push(path);
            }
            files.sort();
            let mut certs = Vec::new();
            for path in files {
                let bytes = std::fs::read(&path).map_err(|source| ProvenanceError::Read { path: path.clone(), source })?;
                let parsed = parse_certificates(&bytes).map_err(|m| invalid(&path, m))?;
                for cert in &parsed {
                    check_store_certificate(store.kind, cert).map_err(|m| invalid(&path, m))?;
                }
                certs.extend(parsed);
            }
            if certs.is_empty() {
                return Err(invalid(&dir, format!("the {} trust store {:?} holds no certificate", store.kind.dir(), store.name)));
            }
            stores.insert(store.clone(), certs);
        }
        Ok(TrustStore { stores })
    }

    /// The certificates of the stores of `kind` among `refs`.
    pub(super) fn certificates<'a>(&'a self, refs: &'a [StoreRef], kind: StoreKind) -> impl Iterator<Item = &'a Cert> + 'a {
        refs.iter().filter(move |r| r.kind == kind).flat_map(|r| self.stores.get(r).into_iter().flatten())
    }
}

/// PEM (every `CERTIFICATE` block) or, when the file is not PEM, one DER certificate.
fn parse_certificates(bytes: &[u8]) -> Result<Vec<Cert>, String> {
    let text_start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
    if bytes[text_start..].starts_with(b"-----BEGIN") {
        let blocks = x509_cert::Certificate::load_pem_chain(bytes).map_err(|e| format!("not a PEM certificate file: {e}"))?;
        blocks
            .iter()
            .map(|c| {
                let der = der::Encode::to_der(c).map_err(|e| format!("cannot re-encode a certificate: {e}"))?;
                Cert::from_der(&der)
            })
            .collect()
    } else {
        Ok(vec![Cert::from_der(bytes).map_err(|e| format!("neither PEM nor a DER certificate: {e}"))?])
    }
}

/// The store rules of notation's trust store: roots for `tsa`, CAs or self-signed signing
/// certificates for `ca` and `signingAuthority`.
fn check_store_certificate(kind: StoreKind, cert: &Cert) -> Result<(), String> {
    let self_signed = cert.issued_by(cert).is_ok();
    let ca = cert.is_ca();
    match kind {
        StoreKind::Tsa if !(ca && self_signed) => Err(format!(
            "certificate {:?} is not a self-signed root CA certificate, which a tsa trust store must hold",
            cert.subject()
        )),
        StoreKind::Ca | StoreKind::SigningAuthority if !(ca || self_signed) => Err(format!(
            "certificate {:?} is neither a CA certificate nor self-signed",
            cert.subject()
        )),
        _ => Ok(()),
    }
}
