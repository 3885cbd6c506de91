//! Provenance: who published an image, checked before it enters the registry (issue #18).
//!
//! Verifies Notary Project signatures (COSE and JWS envelopes, x509 chains to a trust store,
//! RFC 3161 timestamp countersignatures) under a Notary Project trust policy, and cosign
//! simple-signing signatures under a PEM public key. This module has no network of its own and no
//! CLI types: the registry client finds the signatures and hands their bytes here, so every byte
//! this module judges came through the same size-capped reads as the rest of the tool.
//!
//! Revocation (OCSP, CRLs) cannot be checked offline and is not checked; see [`Verifier::notes`].

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Everything needed to judge signatures, loaded once per run before anything is read from a
/// registry; loading fails on a malformed policy, store or key, naming the file and never printing
/// key material.
pub struct Verifier {
    _private: (),
}

/// A trust policy, trust store or key that cannot be used: the file and what is wrong with it.
/// Messages never include key material.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The descriptor of the image being mirrored, as a signature's payload must name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

/// One candidate signature of a subject, as found in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// A Notary Project signature: the envelope layer's media type (`application/cose` or
    /// `application/jose+json`) and bytes.
    Notation { envelope_media_type: String, envelope: Vec<u8> },
    /// A cosign signature: the simple-signing payload (the layer blob) and the base64 signature from the
    /// layer annotation `dev.cosignproject.cosign/signature`.
    Cosign { payload: Vec<u8>, signature_b64: String },
}

/// What the signatures of one image prove.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Outcome {
    /// signer: the leaf certificate subject (Notary) or "sha256:<fingerprint of the public key DER>" (cosign)
    Verified { signer: String },
    Unsigned,
    Invalid { reason: String },
    NotCovered,
}

impl Outcome {
    /// The outcome's name in reports and metrics: `verified`, `unsigned`, `invalid`, `not covered`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Verified { .. } => "verified",
            Outcome::Unsigned => "unsigned",
            Outcome::Invalid { .. } => "invalid",
            Outcome::NotCovered => "not covered",
        }
    }
}

impl Verifier {
    /// `notation`: (trust policy JSON file, trust store directory in the Notary Project layout:
    /// x509/ca/<name>/*.pem|crt, x509/tsa/<name>/*, x509/signingAuthority/<name>/*).
    /// `cosign`: (scope glob over the source reference, PEM public key file) pairs.
    pub fn load(notation: Option<(&Path, &Path)>, cosign: &[(String, PathBuf)]) -> Result<Verifier, ProvenanceError> {
        let _ = (notation, cosign);
        todo!("issue #18: loading trust policy, trust store and cosign keys")
    }

    /// Whether a trust policy (registryScopes, not "skip") or a cosign scope covers this source reference
    /// (the reference as written before mapping, e.g. "mcr.microsoft.com/dotnet/runtime:8.0").
    pub fn covers(&self, source: &str) -> bool {
        let _ = source;
        todo!("issue #18: scope matching")
    }

    /// Verifies the candidate signatures of `subject` (the digest being mirrored). Verified as soon as one
    /// signature satisfies the policy that covers `source`; otherwise the most informative failure.
    pub fn verify(&self, source: &str, subject: &Subject, signatures: &[Signature], now: SystemTime) -> Outcome {
        let _ = (source, subject, signatures, now);
        todo!("issue #18: verification")
    }

    /// What verification does not check, for the docs and the report: revocation cannot be checked
    /// offline.
    pub fn notes(&self) -> Vec<String> {
        vec![REVOCATION_NOTE.to_string()]
    }
}

/// The limit every report states: no OCSP or CRL is fetched (the tool reaches only registries).
pub const REVOCATION_NOTE: &str =
    "certificate revocation (OCSP, CRL) is not checked: it cannot be checked offline";
