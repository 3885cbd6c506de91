//! RFC 3161 timestamp countersignatures: a `TimeStampToken` (CMS SignedData over a `TSTInfo`)
//! that a time stamping authority issued over the envelope's signature bytes. A verified token
//! proves the signature existed at `genTime` (± `accuracy`), so a signing certificate that has
//! since expired still counts if it was valid then.
//!
//! The checks follow the specification's "Validate Authentic Timestamp" step and notation's
//! tspclient-go: the token is SignedData with exactly one signer over an `id-ct-TSTInfo`; the
//! signed attributes carry the content type, the message digest of the TSTInfo and a
//! `signing-certificate-v2` naming the signer's certificate; the signature over the signed
//! attributes verifies with that certificate; the certificate chains through the token's
//! certificates to a root of the policy's `tsa` trust store, valid at `genTime`, with the
//! time stamping certificate requirements; and `messageImprint` is the hash of the signature.

use std::time::{Duration, SystemTime};

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::asn1::{Any, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};

use super::crypto::{self, Hash};
use super::x509::{self, Cert, Purpose};

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ATTR_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ATTR_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ATTR_SIGNING_CERTIFICATE_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
/// RFC 3628's baseline time-stamp policy: one second of accuracy when none is stated.
const BASELINE_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.2023.1.1");

/// What a verified token proves: the signature existed within `[earliest, latest]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timestamp {
    pub earliest: SystemTime,
    pub latest: SystemTime,
}

#[derive(der::Sequence)]
struct MessageImprint {
    hash_algorithm: spki::AlgorithmIdentifierOwned,
    hashed_message: OctetString,
}

#[derive(der::Sequence)]
struct Accuracy {
    #[asn1(optional = "true")]
    seconds: Option<u64>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    millis: Option<u16>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    micros: Option<u16>,
}

#[derive(der::Sequence)]
struct EssCertIdV2 {
    /// Absent means SHA-256 (the DEFAULT of RFC 5035).
    #[asn1(optional = "true")]
    hash_algorithm: Option<spki::AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

#[derive(der::Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

/// The parts of a `TSTInfo` the verification needs; the fields after `accuracy` are read past.
struct TstInfo {
    policy: ObjectIdentifier,
    imprint: MessageImprint,
    gen_time: SystemTime,
    accuracy: Duration,
    /// genTime had a fraction of a second beyond `gen_time`.
    fraction: bool,
}

/// Verifies `token` as a countersignature over `signature`, with roots from `tsa_roots`.
pub(super) fn verify(token: &[u8], signature: &[u8], tsa_roots: &[Cert]) -> Result<Timestamp, String> {
    let info = ContentInfo::from_der(token).map_err(|e| format!("the timestamp token is not CMS: {e}"))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err("the timestamp token is not CMS SignedData".into());
    }
    let signed: SignedData = info.content.decode_as().map_err(|e| format!("the timestamp token's SignedData is malformed: {e}"))?;
    if signed.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err("the timestamp token does not hold a TSTInfo".into());
    }
    let content = signed.encap_content_info.econtent.as_ref().ok_or("the timestamp token has no TSTInfo")?;
    if content.tag() != Tag::OctetString {
        return Err("the timestamp token's content is not an OCTET STRING".into());
    }
    let tst_der = content.value();
    let tst = parse_tst_info(tst_der)?;

    let certs = signed
        .certificates
        .as_ref()
        .map(|set| {
            set.0
                .iter()
                .filter_map(|c| match c {
                    CertificateChoices::Certificate(c) => Some(c.to_der().map_err(|e| e.to_string()).and_then(|d| Cert::from_der(&d))),
                    _ => None,
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let signers = signed.signer_infos.0.as_slice();
    let [signer] = signers else {
        return Err(format!("the timestamp token has {} signers, not one", signers.len()));
    };
    let tsa = certs
        .iter()
        .find(|c| identifies(&signer.sid, c))
        .ok_or("the timestamp token does not carry its signing certificate")?;

    // Signed attributes: content type, message digest of the TSTInfo, signing-certificate-v2.
    let attrs = signer.signed_attrs.as_ref().ok_or("the timestamp token has no signed attributes")?;
    let attr = |oid: ObjectIdentifier| -> Result<&Any, String> {
        let a = attrs.iter().find(|a| a.oid == oid).ok_or_else(|| format!("the timestamp token lacks the signed attribute {oid}"))?;
        match a.values.as_slice() {
            [v] => Ok(v),
            _ => Err(format!("the timestamp token's signed attribute {oid} must have one value")),
        }
    };
    let content_type: ObjectIdentifier =
        attr(ATTR_CONTENT_TYPE)?.decode_as().map_err(|e| format!("bad content-type attribute: {e}"))?;
    if content_type != ID_CT_TST_INFO {
        return Err("the timestamp token's content-type attribute is not id-ct-TSTInfo".into());
    }
    let digest_hash =
        Hash::from_oid(&signer.digest_alg.oid).ok_or_else(|| format!("unsupported digest algorithm {}", signer.digest_alg.oid))?;
    let message_digest: OctetString =
        attr(ATTR_MESSAGE_DIGEST)?.decode_as().map_err(|e| format!("bad message-digest attribute: {e}"))?;
    if message_digest.as_bytes() != digest_hash.digest(tst_der) {
        return Err("the timestamp token's TSTInfo does not match its signed digest".into());
    }
    let signing_cert: SigningCertificateV2 = attr(ATTR_SIGNING_CERTIFICATE_V2)?
        .decode_as()
        .map_err(|e| format!("bad signing-certificate-v2 attribute: {e}"))?;
    let _ = &signing_cert.policies;
    let first = signing_cert.certs.first().ok_or("the signing-certificate-v2 attribute names no certificate")?;
    let _ = &first.issuer_serial;
    let cert_hash_oid = first.hash_algorithm.as_ref().map_or(crypto::SHA256, |a| a.oid);
    let cert_hash =
        Hash::from_oid(&cert_hash_oid).ok_or_else(|| format!("unsupported signing-certificate-v2 hash {cert_hash_oid}"))?;
    if first.cert_hash.as_bytes() != cert_hash.digest(&tsa.der) {
        return Err("the signing-certificate-v2 attribute does not name the token's signing certificate".into());
    }
    let signed_attrs_der = attrs.to_der().map_err(|e| format!("cannot encode the signed attributes: {e}"))?;
    let scheme = crypto::scheme_of(&signer.signature_algorithm, Some(digest_hash))?;
    tsa.public_key()?
        .verify(scheme, &signed_attrs_der, signer.signature.as_bytes())
        .map_err(|e| format!("the timestamp token's signature: {e}"))?;

    // The TSA's chain: from its certificate through the token's to a root of the tsa store,
    // every certificate valid at genTime.
    let chain = build_chain(tsa, &certs, tsa_roots)?;
    x509::check_chain(&chain, Purpose::TimeStamping)?;
    if let Some(c) = chain.iter().find(|c| !c.valid_at(tst.gen_time)) {
        return Err(format!("the time stamping certificate {:?} was not valid at the timestamp's time", c.subject()));
    }

    // What was timestamped must be this signature.
    let imprint_hash = Hash::from_oid(&tst.imprint.hash_algorithm.oid)
        .ok_or_else(|| format!("unsupported message imprint hash {}", tst.imprint.hash_algorithm.oid))?;
    if tst.imprint.hashed_message.as_bytes() != imprint_hash.digest(signature) {
        return Err("the timestamp is over other bytes than this signature".into());
    }
    let accuracy = if tst.accuracy.is_zero() && tst.policy == BASELINE_POLICY { Duration::from_secs(1) } else { tst.accuracy };
    let fraction = if tst.fraction { Duration::from_secs(1) } else { Duration::ZERO };
    Ok(Timestamp {
        earliest: tst.gen_time.checked_sub(accuracy).unwrap_or(tst.gen_time),
        latest: tst.gen_time + fraction + accuracy,
    })
}

/// Whether `sid` names `cert` (issuer and serial number, or subject key identifier).
fn identifies(sid: &SignerIdentifier, cert: &Cert) -> bool {
    let tbs = &cert.cert.tbs_certificate;
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(is) => {
            is.serial_number == tbs.serial_number && is.issuer.to_der().ok() == tbs.issuer.to_der().ok()
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => tbs
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == SUBJECT_KEY_IDENTIFIER)
            .and_then(|e| OctetString::from_der(e.extn_value.as_bytes()).ok())
            .is_some_and(|k| k.as_bytes() == ski.0.as_bytes()),
    }
}

/// Builds the chain from `leaf` upward through `intermediates` until a certificate of `roots`
/// (equal bytes) or one issued by a root; the result ends with that root.
fn build_chain(leaf: &Cert, intermediates: &[Cert], roots: &[Cert]) -> Result<Vec<Cert>, String> {
    let mut chain = vec![leaf.clone()];
    for _ in 0..8 {
        let top = chain.last().expect("the chain starts with the leaf");
        if roots.contains(top) {
            return Ok(chain);
        }
        if let Some(root) = roots.iter().find(|r| top.issued_by(r).is_ok()) {
            chain.push(root.clone());
            return Ok(chain);
        }
        let next = intermediates
            .iter()
            .find(|c| !chain.contains(c) && top.issued_by(c).is_ok())
            .ok_or_else(|| format!("the time stamping certificate {:?} does not chain to the tsa trust store", leaf.subject()))?;
        chain.push(next.clone());
    }
    Err("the time stamping certificate chain is too long".into())
}

fn parse_tst_info(der: &[u8]) -> Result<TstInfo, String> {
    let bad = |e: der::Error| format!("the timestamp token's TSTInfo is malformed: {e}");
    let mut r = SliceReader::new(der).map_err(bad)?;
    let info = r
        .sequence(|r| {
            let version: u8 = r.decode()?;
            let policy: ObjectIdentifier = r.decode()?;
            let imprint: MessageImprint = r.decode()?;
            let _serial: der::asn1::Int = r.decode()?;
            let gen_time: Any = r.decode()?;
            let accuracy = match r.peek_tag()? {
                Tag::Sequence => Some(r.decode::<Accuracy>()?),
                _ => None,
            };
            // ordering, nonce, tsa, extensions: not needed.
            r.read_slice(r.remaining_len())?;
            Ok((version, policy, imprint, gen_time, accuracy))
        })
        .map_err(bad)?;
    let (version, policy, imprint, gen_time, accuracy) = info;
    if version != 1 {
        return Err(format!("unsupported TSTInfo version {version}"));
    }
    if gen_time.tag() != Tag::GeneralizedTime {
        return Err("the TSTInfo genTime is not a GeneralizedTime".into());
    }
    let (gen_time, fraction) = generalized_time(gen_time.value())?;
    let accuracy = accuracy
        .map(|a| {
            Duration::from_secs(a.seconds.unwrap_or(0))
                + Duration::from_millis(a.millis.unwrap_or(0).into())
                + Duration::from_micros(a.micros.unwrap_or(0).into())
        })
        .unwrap_or_default();
    Ok(TstInfo { policy, imprint, gen_time, accuracy, fraction })
}

/// `YYYYMMDDHHMMSS[.fff…]Z`: RFC 3161 allows fractional seconds, which the `der` crate's
/// GeneralizedTime refuses. Returns the whole second and whether a fraction followed (the
/// caller widens the range by a second so it still contains the true time).
fn generalized_time(value: &[u8]) -> Result<(SystemTime, bool), String> {
    let s = std::str::from_utf8(value).map_err(|_| "genTime is not text".to_string())?;
    let bad = || format!("genTime {s:?} is not a UTC GeneralizedTime");
    let body = s.strip_suffix('Z').ok_or_else(bad)?;
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (w, f.bytes().any(|b| b != b'0')),
        Some(_) => return Err(bad()),
        None => (body, false),
    };
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let rfc3339 = format!("{}-{}-{}T{}:{}:{}Z", &whole[0..4], &whole[4..6], &whole[6..8], &whole[8..10], &whole[10..12], &whole[12..14]);
    let t = super::envelope::parse_rfc3339(&rfc3339).map_err(|_| bad())?;
    Ok((t, frac))
}
