//! The COSE_Sign1 envelope (`application/cose`) of the Notary Project signature specification
//! (specs/signature-envelope-cose.md): a tagged COSE_Sign1 whose protected header carries `alg`,
//! `crit`, `cty` and the Notary Project's signed attributes, and whose unprotected header
//! carries `x5chain` (label 33) and the timestamp countersignature.

use coset::cbor::value::Value;
use coset::iana::{self, EnumI64};
use coset::{CborSerializable, CoseSign1, Label, RegisteredLabelWithPrivate, TaggedCborSerializable};

use super::crypto::{Hash, Scheme};
use super::envelope::{self, Envelope, SigningScheme};

/// COSE header label of `x5chain` (RFC 9360).
const X5CHAIN: i64 = 33;

pub(super) fn parse(bytes: &[u8]) -> Result<Envelope, String> {
    let sign1 = CoseSign1::from_tagged_slice(bytes)
        .or_else(|_| CoseSign1::from_slice(bytes))
        .map_err(|e| format!("not a COSE_Sign1 envelope: {e}"))?;
    let protected = &sign1.protected.header;
    let scheme = match &protected.alg {
        Some(RegisteredLabelWithPrivate::Assigned(a)) => match a {
            iana::Algorithm::PS256 => Scheme::RsaPss(Hash::Sha256),
            iana::Algorithm::PS384 => Scheme::RsaPss(Hash::Sha384),
            iana::Algorithm::PS512 => Scheme::RsaPss(Hash::Sha512),
            iana::Algorithm::ES256 => Scheme::EcdsaFixed(Hash::Sha256),
            iana::Algorithm::ES384 => Scheme::EcdsaFixed(Hash::Sha384),
            iana::Algorithm::ES512 => Scheme::EcdsaFixed(Hash::Sha512),
            other => return Err(format!("unsupported COSE algorithm {}", other.to_i64())),
        },
        Some(other) => return Err(format!("unsupported COSE algorithm {other:?}")),
        None => return Err("the alg header is missing".into()),
    };
    let critical = protected
        .crit
        .iter()
        .map(|l| match l {
            RegisteredLabelWithPrivate::Text(t) => t.clone(),
            RegisteredLabelWithPrivate::Assigned(a) => format!("label {}", a.to_i64()),
            RegisteredLabelWithPrivate::PrivateUse(i) => format!("label {i}"),
        })
        .collect::<Vec<_>>();
    let content_type = match &protected.content_type {
        Some(coset::ContentType::Text(t)) => Some(t.as_str()),
        Some(coset::ContentType::Assigned(_)) => Some("(a CoAP content format)"),
        None => None,
    };
    let get = |name: &str| protected.rest.iter().find(|(l, _)| *l == Label::Text(name.to_string())).map(|(_, v)| v);
    let signing_scheme = match get(envelope::SIGNING_SCHEME) {
        Some(Value::Text(t)) => SigningScheme::parse(t)?,
        Some(_) => return Err(format!("{} is not text", envelope::SIGNING_SCHEME)),
        None => return Err(format!("{} is missing", envelope::SIGNING_SCHEME)),
    };
    let time = |name: &str| -> Result<Option<std::time::SystemTime>, String> {
        match get(name) {
            None => Ok(None),
            // RFC 8949 epoch-based date/time: tag 1 over an integer (fractions are not used).
            Some(Value::Tag(1, v)) => match v.as_ref() {
                Value::Integer(i) => {
                    envelope::epoch_seconds(i64::try_from(*i).map_err(|_| format!("{name} is out of range"))?).map(Some)
                }
                Value::Float(f) if f.is_finite() => envelope::epoch_seconds(*f as i64).map(Some),
                _ => Err(format!("{name} is not an epoch date/time")),
            },
            Some(_) => Err(format!("{name} is not an epoch date/time (CBOR tag 1)")),
        }
    };
    let authentic_signing_time = time(envelope::AUTHENTIC_SIGNING_TIME)?;
    let expiry = time(envelope::EXPIRY)?;
    if signing_scheme == SigningScheme::X509 {
        // Required under notary.x509 but untrusted: it is never used for a decision.
        time(envelope::SIGNING_TIME)?.ok_or_else(|| format!("{} is missing", envelope::SIGNING_TIME))?;
    }
    envelope::check_headers(
        content_type,
        &critical,
        &|name| get(name).is_some(),
        signing_scheme,
        authentic_signing_time,
    )?;

    // x5chain is unprotected by default; the specification allows it in the protected header too.
    let chain_value = [&sign1.unprotected, protected]
        .iter()
        .find_map(|h| h.rest.iter().find(|(l, _)| *l == Label::Int(X5CHAIN)).map(|(_, v)| v.clone()))
        .ok_or("the x5chain header is missing")?;
    let chain = match chain_value {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Bytes(b) => Ok(b),
                _ => Err("x5chain holds something other than certificates".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        // A single certificate may be a bare byte string (RFC 9360).
        Value::Bytes(b) => vec![b],
        _ => return Err("x5chain is not a list of certificates".into()),
    };
    let timestamp = match sign1
        .unprotected
        .rest
        .iter()
        .find(|(l, _)| *l == Label::Text(envelope::TIMESTAMP_SIGNATURE.to_string()))
        .map(|(_, v)| v)
    {
        Some(Value::Bytes(b)) => Some(b.clone()),
        Some(_) => return Err(format!("{} is not a byte string", envelope::TIMESTAMP_SIGNATURE)),
        None => None,
    };
    let payload = sign1.payload.clone().ok_or("the envelope has no payload (detached payloads are not used)")?;
    Ok(Envelope {
        signed_bytes: sign1.tbs_data(&[]),
        signature: sign1.signature.clone(),
        payload,
        scheme,
        chain,
        signing_scheme,
        authentic_signing_time,
        expiry,
        timestamp,
    })
}
