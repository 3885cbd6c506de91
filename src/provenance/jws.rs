//! The JWS envelope (`application/jose+json`) of the Notary Project signature specification
//! (specs/signature-envelope-jws.md): JSON serialization with a base64url protected header
//! holding `alg`, `crit`, `cty` and the signed attributes, and an unprotected `header` holding
//! `x5c` and the timestamp countersignature.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::crypto::{Hash, Scheme};
use super::envelope::{self, Envelope, SigningScheme};

#[derive(serde::Deserialize)]
struct Jws {
    payload: String,
    protected: String,
    #[serde(default)]
    header: Unprotected,
    signature: String,
}

#[derive(serde::Deserialize, Default)]
struct Unprotected {
    #[serde(default)]
    x5c: Vec<String>,
    #[serde(rename = "io.cncf.notary.timestampSignature")]
    timestamp: Option<String>,
}

pub(super) fn parse(bytes: &[u8]) -> Result<Envelope, String> {
    let jws: Jws = serde_json::from_slice(bytes).map_err(|e| format!("not a JWS JSON envelope: {e}"))?;
    let b64url = |what: &str, s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|e| format!("{what} is not base64url: {e}"));
    let protected_bytes = b64url("the protected header", &jws.protected)?;
    let protected: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&protected_bytes).map_err(|e| format!("the protected header is not a JSON object: {e}"))?;
    let text = |name: &str| -> Result<Option<&str>, String> {
        match protected.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{name} is not a string")),
        }
    };
    let scheme = match text("alg")?.ok_or("the alg header is missing")? {
        "PS256" => Scheme::RsaPss(Hash::Sha256),
        "PS384" => Scheme::RsaPss(Hash::Sha384),
        "PS512" => Scheme::RsaPss(Hash::Sha512),
        "ES256" => Scheme::EcdsaFixed(Hash::Sha256),
        "ES384" => Scheme::EcdsaFixed(Hash::Sha384),
        "ES512" => Scheme::EcdsaFixed(Hash::Sha512),
        other => return Err(format!("unsupported JWS algorithm {other:?}")),
    };
    let critical = match protected.get("crit") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or("crit holds something other than names".to_string()))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("crit is not a list".into()),
        None => Vec::new(),
    };
    let signing_scheme =
        SigningScheme::parse(text(envelope::SIGNING_SCHEME)?.ok_or_else(|| format!("{} is missing", envelope::SIGNING_SCHEME))?)?;
    let time = |name: &str| text(name)?.map(envelope::parse_rfc3339).transpose();
    let authentic_signing_time = time(envelope::AUTHENTIC_SIGNING_TIME)?;
    let expiry = time(envelope::EXPIRY)?;
    if signing_scheme == SigningScheme::X509 {
        time(envelope::SIGNING_TIME)?.ok_or_else(|| format!("{} is missing", envelope::SIGNING_TIME))?;
    }
    envelope::check_headers(
        text("cty")?,
        &critical,
        &|name| protected.contains_key(name),
        signing_scheme,
        authentic_signing_time,
    )?;
    let chain = jws
        .header
        .x5c
        .iter()
        .map(|c| STANDARD.decode(c).map_err(|e| format!("x5c holds a certificate that is not base64: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err("the x5c header is missing".into());
    }
    let timestamp = jws
        .header
        .timestamp
        .as_deref()
        .map(|t| STANDARD.decode(t).map_err(|e| format!("{} is not base64: {e}", envelope::TIMESTAMP_SIGNATURE)))
        .transpose()?;
    Ok(Envelope {
        payload: b64url("the payload", &jws.payload)?,
        signed_bytes: format!("{}.{}", jws.protected, jws.payload).into_bytes(),
        signature: b64url("the signature", &jws.signature)?,
        scheme,
        chain,
        signing_scheme,
        authentic_signing_time,
        expiry,
        timestamp,
    })
}
