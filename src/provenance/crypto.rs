//! Signature primitives: which algorithm a key and an algorithm name mean, and the one call that
//! checks a signature.
//!
//! All verification goes through aws-lc-rs, the library rustls already links for every TLS
//! connection this tool makes: one audited implementation of RSA-PSS, RSA PKCS#1 v1.5, ECDSA and
//! Ed25519 instead of a second family of pure-Rust crates (see docs/provenance.md).

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use der::Decode;
use der::asn1::{ObjectIdentifier, UintRef};
use spki::SubjectPublicKeyInfoOwned;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
pub(super) const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(super) const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
pub(super) const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// A public key as a certificate or a PEM file carries it, reduced to what verification needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    /// RSA with the modulus size in bits.
    Rsa(usize),
    EcP256,
    EcP384,
    EcP521,
    Ed25519,
}

/// A hash function by its output size; the three the Notary Project allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub(super) fn from_oid(oid: &ObjectIdentifier) -> Option<Hash> {
        match *oid {
            SHA256 => Some(Hash::Sha256),
            SHA384 => Some(Hash::Sha384),
            SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    pub(super) fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }
}

/// A signature scheme: what the signer claims (an envelope's `alg`, a certificate's
/// `signatureAlgorithm`) or what a key implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    RsaPss(Hash),
    RsaPkcs1(Hash),
    /// ECDSA with the signature as DER `Ecdsa-Sig-Value` (certificates, CMS).
    EcdsaDer(Hash),
    /// ECDSA with the signature as fixed-size `r || s` (COSE, JWS).
    EcdsaFixed(Hash),
    Ed25519,
}

impl Scheme {
    pub(super) fn name(self) -> &'static str {
        match self {
            Scheme::RsaPss(Hash::Sha256) => "RSASSA-PSS SHA-256",
            Scheme::RsaPss(Hash::Sha384) => "RSASSA-PSS SHA-384",
            Scheme::RsaPss(Hash::Sha512) => "RSASSA-PSS SHA-512",
            Scheme::RsaPkcs1(_) => "RSA PKCS#1 v1.5",
            Scheme::EcdsaDer(_) | Scheme::EcdsaFixed(_) => "ECDSA",
            Scheme::Ed25519 => "Ed25519",
        }
    }
}

/// A parsed public key: its kind and the bytes aws-lc-rs takes (the `subjectPublicKey` bits: a
/// PKCS#1 `RSAPublicKey`, an uncompressed EC point, or the raw Ed25519 key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PublicKey {
    pub kind: KeyKind,
    pub bytes: Vec<u8>,
}

impl PublicKey {
    /// Reads a SubjectPublicKeyInfo. Errors say which algorithm or curve is not supported.
    pub(super) fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<PublicKey, String> {
        let bytes = spki.subject_public_key.as_bytes().ok_or("public key bit string is not whole bytes")?.to_vec();
        let oid = spki.algorithm.oid;
        let kind = if oid == RSA_ENCRYPTION || oid == RSASSA_PSS {
            KeyKind::Rsa(rsa_modulus_bits(&bytes)?)
        } else if oid == EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or("EC public key without a named curve")?;
            match curve {
                P256 => KeyKind::EcP256,
                P384 => KeyKind::EcP384,
                P521 => KeyKind::EcP521,
                other => return Err(format!("unsupported elliptic curve {other}")),
            }
        } else if oid == ED25519 {
            KeyKind::Ed25519
        } else {
            return Err(format!("unsupported public key algorithm {oid}"));
        };
        Ok(PublicKey { kind, bytes })
    }

    /// Checks `signature` over `message` under `scheme`. The scheme must fit the key (an ECDSA
    /// scheme on an RSA key fails here, not in the library).
    pub(super) fn verify(&self, scheme: Scheme, message: &[u8], signature: &[u8]) -> Result<(), String> {
        let alg: &'static dyn VerificationAlgorithm = match (self.kind, scheme) {
            (KeyKind::Rsa(_), Scheme::RsaPss(Hash::Sha256)) => &signature::RSA_PSS_2048_8192_SHA256,
            (KeyKind::Rsa(_), Scheme::RsaPss(Hash::Sha384)) => &signature::RSA_PSS_2048_8192_SHA384,
            (KeyKind::Rsa(_), Scheme::RsaPss(Hash::Sha512)) => &signature::RSA_PSS_2048_8192_SHA512,
            (KeyKind::Rsa(_), Scheme::RsaPkcs1(Hash::Sha256)) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (KeyKind::Rsa(_), Scheme::RsaPkcs1(Hash::Sha384)) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (KeyKind::Rsa(_), Scheme::RsaPkcs1(Hash::Sha512)) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (KeyKind::EcP256, Scheme::EcdsaDer(Hash::Sha256)) => &signature::ECDSA_P256_SHA256_ASN1,
            (KeyKind::EcP256, Scheme::EcdsaDer(Hash::Sha384)) => &signature::ECDSA_P256_SHA384_ASN1,
            (KeyKind::EcP384, Scheme::EcdsaDer(Hash::Sha256)) => &signature::ECDSA_P384_SHA256_ASN1,
            (KeyKind::EcP384, Scheme::EcdsaDer(Hash::Sha384)) => &signature::ECDSA_P384_SHA384_ASN1,
            (KeyKind::EcP521, Scheme::EcdsaDer(Hash::Sha256)) => &signature::ECDSA_P521_SHA256_ASN1,
            (KeyKind::EcP521, Scheme::EcdsaDer(Hash::Sha384)) => &signature::ECDSA_P521_SHA384_ASN1,
            (KeyKind::EcP521, Scheme::EcdsaDer(Hash::Sha512)) => &signature::ECDSA_P521_SHA512_ASN1,
            (KeyKind::EcP256, Scheme::EcdsaFixed(Hash::Sha256)) => &signature::ECDSA_P256_SHA256_FIXED,
            (KeyKind::EcP384, Scheme::EcdsaFixed(Hash::Sha384)) => &signature::ECDSA_P384_SHA384_FIXED,
            (KeyKind::EcP521, Scheme::EcdsaFixed(Hash::Sha512)) => &signature::ECDSA_P521_SHA512_FIXED,
            (KeyKind::Ed25519, Scheme::Ed25519) => &signature::ED25519,
            (kind, scheme) => return Err(format!("{} signature does not fit a {} key", scheme.name(), kind.name())),
        };
        UnparsedPublicKey::new(alg, &self.bytes)
            .verify(message, signature)
            .map_err(|_| "signature does not verify".to_string())
    }

    /// sha256 over the DER SubjectPublicKeyInfo: how cosign users name a key.
    pub(super) fn fingerprint(spki_der: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Hash::Sha256.digest(spki_der)))
    }
}

impl KeyKind {
    pub(super) fn name(self) -> String {
        match self {
            KeyKind::Rsa(bits) => format!("RSA {bits}"),
            KeyKind::EcP256 => "ECDSA P-256".into(),
            KeyKind::EcP384 => "ECDSA P-384".into(),
            KeyKind::EcP521 => "ECDSA P-521".into(),
            KeyKind::Ed25519 => "Ed25519".into(),
        }
    }

    /// The one envelope algorithm the Notary Project allows for this key ("alg MUST be same as
    /// that of signature algorithm identified using signing certificate's public key algorithm
    /// and size"): RSA 2048/3072/4096 → PS256/PS384/PS512, P-256/P-384/P-521 → ES256/ES384/ES512.
    pub(super) fn notary_scheme(self) -> Result<Scheme, String> {
        Ok(match self {
            KeyKind::Rsa(2048) => Scheme::RsaPss(Hash::Sha256),
            KeyKind::Rsa(3072) => Scheme::RsaPss(Hash::Sha384),
            KeyKind::Rsa(4096) => Scheme::RsaPss(Hash::Sha512),
            KeyKind::EcP256 => Scheme::EcdsaFixed(Hash::Sha256),
            KeyKind::EcP384 => Scheme::EcdsaFixed(Hash::Sha384),
            KeyKind::EcP521 => Scheme::EcdsaFixed(Hash::Sha512),
            other => return Err(format!("a {} signing key is not allowed by the Notary Project", other.name())),
        })
    }
}

/// The scheme of a certificate's or CMS signer's `signatureAlgorithm`. `digest` is the CMS
/// signer's digest algorithm, used when the algorithm is bare `rsaEncryption`.
pub(super) fn scheme_of(alg: &spki::AlgorithmIdentifierOwned, digest: Option<Hash>) -> Result<Scheme, String> {
    Ok(match alg.oid {
        SHA256_WITH_RSA => Scheme::RsaPkcs1(Hash::Sha256),
        SHA384_WITH_RSA => Scheme::RsaPkcs1(Hash::Sha384),
        SHA512_WITH_RSA => Scheme::RsaPkcs1(Hash::Sha512),
        RSA_ENCRYPTION => Scheme::RsaPkcs1(digest.ok_or("rsaEncryption signature without a digest algorithm")?),
        ECDSA_SHA256 => Scheme::EcdsaDer(Hash::Sha256),
        ECDSA_SHA384 => Scheme::EcdsaDer(Hash::Sha384),
        ECDSA_SHA512 => Scheme::EcdsaDer(Hash::Sha512),
        ED25519 => Scheme::Ed25519,
        RSASSA_PSS => Scheme::RsaPss(pss_hash(alg)?),
        other => return Err(format!("unsupported signature algorithm {other}")),
    })
}

/// The hash of RSASSA-PSS parameters (`[0] hashAlgorithm`; SHA-1, the default, is refused).
fn pss_hash(alg: &spki::AlgorithmIdentifierOwned) -> Result<Hash, String> {
    #[derive(der::Sequence)]
    struct PssParams {
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        hash: Option<spki::AlgorithmIdentifierOwned>,
        #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
        mask_gen: Option<spki::AlgorithmIdentifierOwned>,
        #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
        salt_length: Option<u32>,
    }
    let params: PssParams = alg
        .parameters
        .as_ref()
        .ok_or("RSASSA-PSS without parameters")?
        .decode_as()
        .map_err(|e| format!("bad RSASSA-PSS parameters: {e}"))?;
    let hash = params.hash.ok_or("RSASSA-PSS with SHA-1 is not allowed")?;
    let hash = Hash::from_oid(&hash.oid).ok_or_else(|| format!("RSASSA-PSS with unsupported hash {}", hash.oid))?;
    let _ = (params.mask_gen, params.salt_length);
    Ok(hash)
}

/// The size of an RSA modulus in bits, from a PKCS#1 `RSAPublicKey`.
fn rsa_modulus_bits(der: &[u8]) -> Result<usize, String> {
    #[derive(der::Sequence)]
    struct RsaPublicKey<'a> {
        modulus: UintRef<'a>,
        _exponent: UintRef<'a>,
    }
    let key = RsaPublicKey::from_der(der).map_err(|e| format!("bad RSA public key: {e}"))?;
    let n = key.modulus.as_bytes();
    let lead = n.first().copied().unwrap_or(0);
    Ok((n.len() * 8).saturating_sub(lead.leading_zeros() as usize))
}
