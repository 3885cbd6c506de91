//! cosign key-based signatures: a PEM public key (ECDSA P-256/P-384/P-521, Ed25519 or RSA) and
//! a signature over the "simple signing" payload, whose `critical.image.docker-manifest-digest`
//! names the image it vouches for.
//!
//! cosign signs the payload bytes as stored (the layer blob), so those exact bytes are
//! verified; the digest inside is then compared with the image being mirrored, which is what
//! binds the signature to it (the payload's `docker-reference` is informational, as in cosign).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use der::Decode;
use spki::SubjectPublicKeyInfoOwned;

use super::{ProvenanceError, Stage};
use super::crypto::{Hash, KeyKind, PublicKey, Scheme};

/// The `critical.type` of every cosign image signature payload.
const SIGNATURE_TYPE: &str = "cosign container image signature";
/// Key files larger than this are not public keys.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// One configured key with the scope of references it must have signed.
#[derive(Debug)]
pub(super) struct CosignKey {
    pub scope: glob::Pattern,
    pub key: PublicKey,
    /// `sha256:<hex>` of the DER SubjectPublicKeyInfo: the signer a report names.
    pub fingerprint: String,
}

impl CosignKey {
    /// Reads a PEM `PUBLIC KEY` file. Errors name the file and never include its contents.
    pub(super) fn load(scope: &str, path: &Path) -> Result<CosignKey, ProvenanceError> {
        let invalid = |message: String| ProvenanceError::Invalid { path: path.to_path_buf(), message };
        let scope = glob::Pattern::new(scope).map_err(|e| invalid(format!("the scope {scope:?} is not a valid glob: {e}")))?;
        let meta = std::fs::metadata(path).map_err(|source| ProvenanceError::Read { path: path.to_path_buf(), source })?;
        if meta.len() > MAX_KEY_FILE {
            return Err(invalid(format!("larger than {MAX_KEY_FILE} bytes: not a public key file")));
        }
        let bytes = std::fs::read(path).map_err(|source| ProvenanceError::Read { path: path.to_path_buf(), source })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid("not a PEM public key (not text)".into()))?;
        let (label, der) = pem_rfc7468::decode_vec(text.trim().as_bytes())
            .map_err(|_| invalid("not a PEM public key (expected one \"-----BEGIN PUBLIC KEY-----\" block)".into()))?;
        if label != "PUBLIC KEY" {
            // Name the label only when it is a known one: a private key must not be echoed.
            let what = if label.contains("PRIVATE") { "a private key".to_string() } else { format!("a PEM {label:?} block") };
            return Err(invalid(format!("holds {what}, not a \"PUBLIC KEY\"")));
        }
        let spki = SubjectPublicKeyInfoOwned::from_der(&der).map_err(|e| invalid(format!("not a SubjectPublicKeyInfo: {e}")))?;
        let key = PublicKey::from_spki(&spki).map_err(invalid)?;
        if let KeyKind::Rsa(bits) = key.kind
            && bits < 2048
        {
            return Err(invalid(format!("an RSA key of {bits} bits is too small (2048 at least)")));
        }
        Ok(CosignKey { scope, key, fingerprint: PublicKey::fingerprint(&der) })
    }

    /// Whether the scope glob matches the reference as written or its normalised form.
    pub(super) fn covers(&self, source: &str, normalised: Option<&str>) -> bool {
        self.scope.matches(source) || normalised.is_some_and(|n| self.scope.matches(n))
    }

    /// Verifies a signature over `payload` and that the payload names `digest`. The error says
    /// whether the signature failed or, signed by this key, the payload does not fit.
    pub(super) fn verify(&self, payload: &[u8], signature_b64: &str, digest: &str) -> Result<(), (Stage, String)> {
        self.check_signature(payload, signature_b64).map_err(|e| (Stage::Integrity, e))?;
        check_payload(payload, digest).map_err(|e| (Stage::Payload, e))
    }

    fn check_signature(&self, payload: &[u8], signature_b64: &str) -> Result<(), String> {
        let signature = STANDARD
            .decode(signature_b64.trim())
            .map_err(|_| "the signature annotation is not base64".to_string())?;
        // cosign hashes with SHA-256 for every key type by default; newer releases may pick
        // the curve's own hash for P-384/P-521. Both are accepted: each is a sound signature.
        let schemes: &[Scheme] = match self.key.kind {
            KeyKind::Rsa(_) => &[Scheme::RsaPkcs1(Hash::Sha256)],
            KeyKind::EcP256 => &[Scheme::EcdsaDer(Hash::Sha256)],
            KeyKind::EcP384 => &[Scheme::EcdsaDer(Hash::Sha256), Scheme::EcdsaDer(Hash::Sha384)],
            KeyKind::EcP521 => &[Scheme::EcdsaDer(Hash::Sha256), Scheme::EcdsaDer(Hash::Sha512)],
            KeyKind::Ed25519 => &[Scheme::Ed25519],
        };
        if !schemes.iter().any(|&s| self.key.verify(s, payload, &signature).is_ok()) {
            return Err(format!("the signature does not verify with key {}", self.fingerprint));
        }
        Ok(())
    }
}

/// The simple-signing payload must be a cosign image signature for `digest`.
fn check_payload(payload: &[u8], digest: &str) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct SimpleSigning {
        critical: Critical,
    }
    #[derive(serde::Deserialize)]
    struct Critical {
        #[serde(rename = "type")]
        kind: String,
        image: Image,
    }
    #[derive(serde::Deserialize)]
    struct Image {
        #[serde(rename = "docker-manifest-digest")]
        digest: String,
    }
    let p: SimpleSigning =
        serde_json::from_slice(payload).map_err(|e| format!("the signed payload is not a cosign simple-signing payload: {e}"))?;
    if p.critical.kind != SIGNATURE_TYPE {
        return Err(format!("the signed payload's type is {:?}, not {SIGNATURE_TYPE:?}", p.critical.kind));
    }
    if p.critical.image.digest != digest {
        return Err(format!("the signature is for {}, not for {digest}", p.critical.image.digest));
    }
    Ok(())
}
