//! Finding the signatures of a manifest, for the provenance gate (`signatures:`, see
//! docs/provenance.md): the bytes are handed to [`crate::provenance`], which judges them.
//!
//! Where signatures live:
//! - Notary Project: an OCI 1.1 referrer of the subject with artifactType
//!   `application/vnd.cncf.notary.signature`, whose one layer is the envelope (`application/cose`
//!   or `application/jose+json`). Found through the referrers API, or its tag-schema fallback
//!   (both in [`super::referrers`]).
//! - cosign: the tag `sha256-<hex>.sig` beside the subject (what cosign writes by default), or
//!   cosign's OCI 1.1 referrer form (artifactType `application/vnd.dev.cosign.artifact.sig.v1+json`);
//!   each layer is a simple-signing payload with its base64 signature in the layer annotation
//!   `dev.cosignproject.cosign/signature`.
//!
//! Every read is small and capped: an envelope or payload over [`MAX_SIGNATURE_BYTES`] is not
//! read at all, and at most [`MAX_CANDIDATES`] signature manifests are read per subject, so a
//! registry that piles up thousands of referrers cannot make a run read them all. A candidate
//! that cannot be used (no envelope layer, too large, a digest that does not match) is not an
//! error of the image: it is reported as why no signature verified.

use futures::StreamExt;

use super::referrers::Referrers;
use super::{Registry, RegistryError};
use crate::digest::Digest;
use crate::manifest::{Descriptor, Manifest};
use crate::provenance::Signature;

/// The artifact type of a Notary Project signature manifest.
pub const NOTARY_SIGNATURE: &str = "application/vnd.cncf.notary.signature";
/// The envelope media types of a Notary Project signature.
pub const NOTARY_ENVELOPES: [&str; 2] = ["application/cose", "application/jose+json"];
/// The artifact type of a cosign signature stored as an OCI 1.1 referrer.
pub const COSIGN_SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The layer annotation holding a cosign signature (base64).
pub const COSIGN_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The largest envelope or payload read. Notary envelopes carry the certificate chain and a
/// timestamp token: a few kilobytes; MCR's are about 4 KiB.
pub const MAX_SIGNATURE_BYTES: u64 = 256 * 1024;
/// Signature manifests read per subject, at most.
pub const MAX_CANDIDATES: usize = 8;

/// What was found for one subject.
#[derive(Debug, Default)]
pub struct Found {
    /// The signatures, bytes read and their digests checked.
    pub signatures: Vec<Signature>,
    /// Candidates that could not be used, each with why (registry text sanitised).
    pub unusable: Vec<String>,
    /// The subject's referrers listing the candidates came from, and the signature manifests
    /// read, each with the reference (digest or cosign tag) it was read by: what a copy of the
    /// subject would read again (see [`Registry::hand_to_copy`]).
    pub listing: Referrers,
    pub manifests: Vec<(String, Manifest)>,
}

impl Registry {
    /// The Notary Project and cosign signatures of `subject` in `repo`. Costs the referrers
    /// listing (the tag-schema fallback reuses the run's one tag list of the repository), then a
    /// manifest and a blob read per signature; [`Registry::hand_to_copy`] spares the copy the
    /// listing and the manifests.
    pub async fn signatures(&self, repo: &str, subject: &Digest) -> Result<Found, RegistryError> {
        let mut found = Found::default();
        let referrers = self.referrers(repo, subject).await?;
        let mut candidates: Vec<(String, bool)> = referrers
            .descriptors
            .iter()
            .filter_map(|d| match d.artifact_type.as_deref() {
                Some(NOTARY_SIGNATURE) => Some((d.digest.to_string(), true)),
                Some(COSIGN_SIGNATURE) => Some((d.digest.to_string(), false)),
                _ => None,
            })
            .collect();
        let sig_tag = format!("{}.sig", subject.referrers_tag());
        if self.cosign_tags(repo, subject).await?.contains(&sig_tag) {
            candidates.push((sig_tag, false));
        }
        if candidates.len() > MAX_CANDIDATES {
            found.unusable.push(format!("{} signature candidates; only the first {MAX_CANDIDATES} read", candidates.len()));
            candidates.truncate(MAX_CANDIDATES);
        }
        for (reference, notary) in candidates {
            let m = self.get_manifest(repo, &reference).await?;
            if notary {
                self.notary_signature(repo, &m, &mut found).await?;
            } else {
                self.cosign_signatures(repo, &m, &mut found).await?;
            }
            found.manifests.push((reference, m));
        }
        found.listing = referrers;
        Ok(found)
    }

    /// Hands what [`Registry::signatures`] read of `subject` to the copy of it that follows:
    /// its referrers listing (see [`Registry::referrers_ahead`]) and the signature manifests
    /// (see [`Registry::read_ahead`]; cosign's tag by its tag, which the copy reads it by), each
    /// served once. The copy then reads again only the signature blobs, which it streams to the
    /// target.
    pub fn hand_to_copy(&self, repo: &str, subject: &Digest, found: &Found) {
        self.referrers_ahead(repo, subject, found.listing.clone());
        for (reference, m) in &found.manifests {
            if Digest::parse(reference).is_ok() {
                self.read_ahead(repo, m);
            } else {
                self.read_ahead_tag(repo, reference, m);
            }
        }
    }

    /// The envelope of a Notary Project signature manifest: its one layer of an envelope type.
    async fn notary_signature(&self, repo: &str, m: &Manifest, found: &mut Found) -> Result<(), RegistryError> {
        let layers: Vec<&Descriptor> =
            m.parsed.layers.iter().filter(|l| NOTARY_ENVELOPES.contains(&l.media_type.as_str())).collect();
        let [layer] = layers.as_slice() else {
            found.unusable.push(format!(
                "Notary Project signature {} has {} envelope layers, not one",
                m.digest,
                layers.len()
            ));
            return Ok(());
        };
        if let Some(envelope) = self.small_blob(repo, layer, found).await? {
            found.signatures.push(Signature::Notation { envelope_media_type: layer.media_type.clone(), envelope });
        }
        Ok(())
    }

    /// The simple-signing payloads of a cosign signature manifest that carry a signature.
    async fn cosign_signatures(&self, repo: &str, m: &Manifest, found: &mut Found) -> Result<(), RegistryError> {
        let signed: Vec<(&Descriptor, String)> = m
            .parsed
            .layers
            .iter()
            .filter_map(|l| {
                let sig = l.annotations.as_ref()?.get(COSIGN_ANNOTATION)?.as_str()?;
                Some((l, sig.to_string()))
            })
            .take(MAX_CANDIDATES)
            .collect();
        if signed.is_empty() {
            found.unusable.push(format!("cosign signature {} has no layer annotated {COSIGN_ANNOTATION}", m.digest));
        }
        for (layer, signature_b64) in signed {
            if let Some(payload) = self.small_blob(repo, layer, found).await? {
                found.signatures.push(Signature::Cosign { payload, signature_b64 });
            }
        }
        Ok(())
    }

    /// A signature blob, read whole when it is no larger than [`MAX_SIGNATURE_BYTES`] and
    /// checked against its descriptor; `None` (and why, in `found`) when it cannot be used.
    async fn small_blob(
        &self,
        repo: &str,
        d: &Descriptor,
        found: &mut Found,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        if d.size > MAX_SIGNATURE_BYTES {
            found.unusable.push(format!(
                "signature blob {} is {} bytes, over the {MAX_SIGNATURE_BYTES}-byte limit",
                d.digest, d.size
            ));
            return Ok(None);
        }
        let mut stream = self.get_blob(repo, &d.digest, 0).await?;
        let mut bytes = Vec::with_capacity(d.size as usize);
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() as u64 > d.size {
                break;
            }
        }
        if let Err(mismatch) = crate::digest::verify_bytes(&bytes, &d.digest, Some(d.size)) {
            found.unusable.push(format!("signature blob {}: {mismatch}", d.digest));
            return Ok(None);
        }
        Ok(Some(bytes))
    }
}
