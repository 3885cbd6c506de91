//! Provenance: who published an image, checked before it enters the registry (issue #18).
//!
//! Verifies Notary Project signatures (COSE and JWS envelopes, x509 chains to a trust store,
//! RFC 3161 timestamp countersignatures) under a Notary Project trust policy, and cosign
//! simple-signing signatures under a PEM public key. This module has no network of its own and no
//! CLI types: the registry client finds the signatures and hands their bytes here, so every byte
//! this module judges came through the same size-capped reads as the rest of the tool.
//!
//! Revocation (OCSP, CRLs) cannot be checked offline and is not checked; see [`Verifier::notes`].

mod cose;
mod cosign;
mod crypto;
mod envelope;
mod jws;
mod policy;
mod store;
mod timestamp;
mod x509;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cosign::CosignKey;
use envelope::SigningScheme;
use policy::{Action, Identity, Policy, StoreKind, TrustPolicy, VerifyTimestamp};
use store::TrustStore;
use x509::{Cert, Purpose};

/// The trust policy file is a few kilobytes; anything this large is not one.
const MAX_POLICY_FILE: u64 = 1024 * 1024;

/// Everything needed to judge signatures, loaded once per run before anything is read from a
/// registry; loading fails on a malformed policy, store or key, naming the file and never printing
/// key material.
#[derive(Debug)]
pub struct Verifier {
    notation: Option<Notation>,
    cosign: Vec<CosignKey>,
}

/// A trust policy with the certificates of every store it names.
#[derive(Debug)]
struct Notation {
    policy: TrustPolicy,
    store: TrustStore,
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
        let notation = match notation {
            Some((policy_path, store_dir)) => {
                let read = |source| ProvenanceError::Read { path: policy_path.to_path_buf(), source };
                let meta = std::fs::metadata(policy_path).map_err(read)?;
                if meta.len() > MAX_POLICY_FILE {
                    return Err(ProvenanceError::Invalid {
                        path: policy_path.to_path_buf(),
                        message: format!("larger than {MAX_POLICY_FILE} bytes: not a trust policy"),
                    });
                }
                let policy = TrustPolicy::parse(policy_path, &std::fs::read(policy_path).map_err(read)?)?;
                if !store_dir.is_dir() {
                    return Err(ProvenanceError::Invalid {
                        path: store_dir.to_path_buf(),
                        message: "the trust store directory does not exist".into(),
                    });
                }
                let wanted: Vec<_> = policy.policies.iter().flat_map(|p| p.stores.iter().cloned()).collect();
                let store = TrustStore::load(store_dir, &wanted)?;
                Some(Notation { policy, store })
            }
            None => None,
        };
        let cosign = cosign.iter().map(|(scope, key)| CosignKey::load(scope, key)).collect::<Result<Vec<_>, _>>()?;
        Ok(Verifier { notation, cosign })
    }

    /// Whether a trust policy (registryScopes, not "skip") or a cosign scope covers this source reference
    /// (the reference as written before mapping, e.g. "mcr.microsoft.com/dotnet/runtime:8.0").
    pub fn covers(&self, source: &str) -> bool {
        self.notation_policy(source).is_some() || !self.cosign_keys(source).is_empty()
    }

    /// Verifies the candidate signatures of `subject` (the digest being mirrored). Verified as soon as one
    /// signature satisfies the policy that covers `source`; otherwise the most informative failure.
    pub fn verify(&self, source: &str, subject: &Subject, signatures: &[Signature], now: SystemTime) -> Outcome {
        let policy = self.notation_policy(source);
        let keys = self.cosign_keys(source);
        if policy.is_none() && keys.is_empty() {
            return Outcome::NotCovered;
        }
        let mut failures: Vec<Failure> = Vec::new();
        let mut checked = 0;
        for signature in signatures {
            match signature {
                Signature::Notation { envelope_media_type, envelope } => {
                    let Some((notation, policy)) = policy else { continue };
                    checked += 1;
                    match notation.verify(policy, source, subject, envelope_media_type, envelope, now) {
                        Ok(signer) => return Outcome::Verified { signer: crate::sanitize::short(&signer) },
                        Err(f) => failures.push(f.context("Notary Project signature")),
                    }
                }
                Signature::Cosign { payload, signature_b64 } => {
                    checked += usize::from(!keys.is_empty());
                    for key in &keys {
                        match key.verify(payload, signature_b64, &subject.digest) {
                            Ok(()) => return Outcome::Verified { signer: key.fingerprint.clone() },
                            Err((stage, reason)) => failures.push(Failure { stage, reason }.context("cosign signature")),
                        }
                    }
                }
            }
        }
        // The failure that got furthest says the most: "not a trusted identity" beats "not for
        // this digest" from an unrelated signature.
        match failures.into_iter().rev().max_by_key(|f| f.stage) {
            None => Outcome::Unsigned,
            Some(best) => {
                let more = if checked > 1 { format!(" ({checked} signatures checked, none valid)") } else { String::new() };
                Outcome::Invalid { reason: crate::sanitize::short(&format!("{}{more}", best.reason)) }
            }
        }
    }

    /// What verification does not check, for the docs and the report: revocation cannot be checked
    /// offline.
    pub fn notes(&self) -> Vec<String> {
        vec![REVOCATION_NOTE.to_string()]
    }

    /// The trust policy for `source`, unless none applies or it says `skip`.
    fn notation_policy(&self, source: &str) -> Option<(&Notation, &Policy)> {
        let notation = self.notation.as_ref()?;
        let policy = notation.policy.for_repository(&repository_of(source))?;
        (policy.level != policy::Level::Skip).then_some((notation, policy))
    }

    fn cosign_keys(&self, source: &str) -> Vec<&CosignKey> {
        let normalised = crate::reference::Reference::parse(source).ok().map(|r| r.to_string());
        self.cosign.iter().filter(|k| k.covers(source, normalised.as_deref())).collect()
    }
}

/// `registry/namespace/repository` of a reference, fully qualified as trust policy scopes are
/// (`nginx:1.25` → `docker.io/library/nginx`).
fn repository_of(source: &str) -> String {
    match crate::reference::Reference::parse(source) {
        Ok(r) => r.name(),
        Err(_) => crate::reference::without_tag_or_digest(source).to_string(),
    }
}

/// How far a signature got before it failed; the furthest is the most informative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Envelope,
    Integrity,
    Payload,
    Authenticity,
    Expiry,
    AuthenticTimestamp,
}

#[derive(Debug)]
struct Failure {
    stage: Stage,
    reason: String,
}

impl Failure {
    fn context(self, what: &str) -> Failure {
        Failure { stage: self.stage, reason: format!("{what}: {}", self.reason) }
    }
}

impl Notation {
    /// The specification's verification steps for one envelope under `policy`: integrity
    /// (always enforced), then authenticity, expiry and the authentic timestamp, each enforced
    /// or logged as the policy's level says. Returns the signer (the leaf's subject).
    fn verify(
        &self,
        policy: &Policy,
        source: &str,
        subject: &Subject,
        media_type: &str,
        bytes: &[u8],
        now: SystemTime,
    ) -> Result<String, Failure> {
        let fail = |stage| move |reason: String| Failure { stage, reason };
        let env = match media_type {
            "application/cose" => cose::parse(bytes),
            "application/jose+json" => jws::parse(bytes),
            other => Err(format!("unsupported envelope media type {other:?}")),
        }
        .map_err(fail(Stage::Envelope))?;

        // Integrity: the signing key's algorithm, the signature, the chain's internal
        // consistency, and the payload naming this image.
        let chain = x509::parse_chain(&env.chain).map_err(fail(Stage::Envelope))?;
        let Some(leaf) = chain.first() else {
            return Err(fail(Stage::Envelope)("the certificate chain is empty".into()));
        };
        let key = leaf.public_key().map_err(fail(Stage::Integrity))?;
        let expected = key.kind.notary_scheme().map_err(fail(Stage::Integrity))?;
        if env.scheme != expected {
            return Err(fail(Stage::Integrity)(format!(
                "alg {} does not match the signing key ({} requires {})",
                env.scheme.name(),
                key.kind.name(),
                expected.name()
            )));
        }
        key.verify(env.scheme, &env.signed_bytes, &env.signature)
            .map_err(|e| fail(Stage::Integrity)(format!("the envelope {e} with its signing certificate")))?;
        x509::check_chain(&chain, Purpose::CodeSigning).map_err(fail(Stage::Integrity))?;
        envelope::check_payload(&env.payload, subject).map_err(fail(Stage::Payload))?;

        let signer = leaf.subject();
        let actions = policy.actions;
        let judge = |action: Action, stage: Stage, result: Result<(), String>| -> Result<(), Failure> {
            match (result, action) {
                (Ok(()), _) | (Err(_), Action::Skip) => Ok(()),
                (Err(reason), Action::Enforce) => Err(Failure { stage, reason }),
                (Err(reason), Action::Log) => {
                    tracing::warn!(
                        source = %crate::sanitize::short(source),
                        policy = %crate::sanitize::short(&policy.name),
                        check = ?stage,
                        "signature check failed but is only logged at this verification level: {}",
                        crate::sanitize::short(&reason)
                    );
                    Ok(())
                }
            }
        };

        // Authenticity: some certificate of the chain is in a store the policy names (of the
        // scheme's type), and the leaf's subject is a trusted identity.
        let kind = match env.signing_scheme {
            SigningScheme::X509 => StoreKind::Ca,
            SigningScheme::SigningAuthority => StoreKind::SigningAuthority,
        };
        judge(actions.authenticity, Stage::Authenticity, self.authentic(policy, kind, &chain))?;

        // Expiry: the signer's "best by" time.
        let expiry = match env.expiry {
            Some(at) if now >= at => Err(format!("the signature expired at {}", crate::time::rfc3339(at))),
            _ => Ok(()),
        };
        judge(actions.expiry, Stage::Expiry, expiry)?;

        // Authentic timestamp: the chain was valid when the signature was made.
        let timestamp = match env.signing_scheme {
            SigningScheme::X509 => self.signing_time_x509(policy, &env, &chain, now),
            SigningScheme::SigningAuthority => {
                let at = env.authentic_signing_time.expect("checked when the envelope was parsed");
                valid_throughout(&chain, at, at, "its authentic signing time")
            }
        };
        judge(actions.authentic_timestamp, Stage::AuthenticTimestamp, timestamp)?;

        // Revocation: not checked (no OCSP or CRL is fetched); see REVOCATION_NOTE.
        Ok(signer)
    }

    fn authentic(&self, policy: &Policy, kind: StoreKind, chain: &[Cert]) -> Result<(), String> {
        let mut trusted = self.store.certificates(&policy.stores, kind).peekable();
        if trusted.peek().is_none() {
            return Err(format!("trust policy {:?} names no {} trust store for this signing scheme", policy.name, kind.dir()));
        }
        if !trusted.any(|t| chain.contains(t)) {
            return Err(format!(
                "the certificate chain of {:?} does not lead to a certificate of the trust policy's {} stores",
                chain[0].subject(),
                kind.dir()
            ));
        }
        let attributes = chain[0].subject_attributes();
        let matches = |id: &Identity| match id {
            Identity::Any => true,
            Identity::Subject(want) => want.iter().all(|(k, v)| attributes.iter().any(|(ak, av)| ak == k && av == v)),
        };
        if !policy.identities.iter().any(matches) {
            return Err(format!("signer {:?} is not a trusted identity of trust policy {:?}", chain[0].subject(), policy.name));
        }
        Ok(())
    }

    /// notary.x509: the chain must be valid throughout the time a verified timestamp proves,
    /// when the policy has a tsa store (and, with `afterCertExpiry`, a certificate has expired);
    /// otherwise valid now.
    fn signing_time_x509(&self, policy: &Policy, env: &envelope::Envelope, chain: &[Cert], now: SystemTime) -> Result<(), String> {
        let tsa_roots: Vec<Cert> = self.store.certificates(&policy.stores, StoreKind::Tsa).cloned().collect();
        let expired = chain.iter().any(|c| now > c.not_after());
        let use_timestamp =
            !tsa_roots.is_empty() && (policy.verify_timestamp == VerifyTimestamp::Always || expired);
        if !use_timestamp {
            return valid_throughout(chain, now, now, "the time of verification (no timestamp is used)");
        }
        let token = env
            .timestamp
            .as_deref()
            .ok_or("the signature has no timestamp countersignature, which the trust policy's tsa store requires")?;
        let ts = timestamp::verify(token, &env.signature, &tsa_roots).map_err(|e| format!("timestamp: {e}"))?;
        valid_throughout(chain, ts.earliest, ts.latest, "the time its timestamp proves")
    }
}

/// Every certificate of `chain` is valid from `from` to `to`.
fn valid_throughout(chain: &[Cert], from: SystemTime, to: SystemTime, when: &str) -> Result<(), String> {
    match chain.iter().find(|c| !(c.valid_at(from) && c.valid_at(to))) {
        None => Ok(()),
        Some(c) => Err(format!(
            "certificate {:?} was not valid at {when} ({}); it is valid from {} to {}",
            c.subject(),
            crate::time::rfc3339(from),
            crate::time::rfc3339(c.not_before()),
            crate::time::rfc3339(c.not_after())
        )),
    }
}

/// The limit every report states: no OCSP or CRL is fetched (the tool reaches only registries).
pub const REVOCATION_NOTE: &str =
    "certificate revocation (OCSP, CRL) is not checked: it cannot be checked offline";

#[cfg(test)]
mod tests;
