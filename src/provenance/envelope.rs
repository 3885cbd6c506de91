//! What a Notary Project signature envelope says, whichever its format: the signed payload and
//! the bytes the signature covers, the algorithm, the certificate chain, the signed attributes
//! (signing scheme, signing time, expiry) and the timestamp countersignature. [`super::cose`]
//! and [`super::jws`] each turn their format into an [`Envelope`]; the checks after that are
//! common.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Subject;
use super::crypto::Scheme;

/// The only payload content type the specification defines.
pub(super) const PAYLOAD_CONTENT_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";
pub(super) const SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
pub(super) const SIGNING_TIME: &str = "io.cncf.notary.signingTime";
pub(super) const AUTHENTIC_SIGNING_TIME: &str = "io.cncf.notary.authenticSigningTime";
pub(super) const EXPIRY: &str = "io.cncf.notary.expiry";
pub(super) const TIMESTAMP_SIGNATURE: &str = "io.cncf.notary.timestampSignature";

/// The critical headers a verifier must understand; any other name in `crit` makes the
/// signature invalid (the specification: "unknown critical headers").
pub(super) const KNOWN_CRITICAL: [&str; 3] = [SIGNING_SCHEME, AUTHENTIC_SIGNING_TIME, EXPIRY];

/// The two signing schemes of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SigningScheme {
    /// `notary.x509`: chains to a `ca` store; the signing time may be proven by an RFC 3161
    /// timestamp countersignature.
    X509,
    /// `notary.x509.signingAuthority`: chains to a `signingAuthority` store; the signing
    /// authority vouches for the signing time in `authenticSigningTime`.
    SigningAuthority,
}

impl SigningScheme {
    pub(super) fn parse(s: &str) -> Result<SigningScheme, String> {
        match s {
            "notary.x509" => Ok(SigningScheme::X509),
            "notary.x509.signingAuthority" => Ok(SigningScheme::SigningAuthority),
            other => Err(format!("unsupported signing scheme {other:?}")),
        }
    }
}

/// A parsed envelope, before any check of its signature.
#[derive(Debug)]
pub(super) struct Envelope {
    /// The signed payload bytes (a JSON descriptor).
    pub payload: Vec<u8>,
    /// Exactly the bytes the signature covers: the COSE `Sig_structure`, the JWS signing input.
    pub signed_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    /// The envelope's `alg`.
    pub scheme: Scheme,
    /// `x5chain` / `x5c`, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    pub signing_scheme: SigningScheme,
    pub authentic_signing_time: Option<SystemTime>,
    pub expiry: Option<SystemTime>,
    /// The RFC 3161 `TimeStampToken` over [`Envelope::signature`], when there is one.
    pub timestamp: Option<Vec<u8>>,
}

/// Checks the header rules both formats share: the content type, the critical header list (it
/// must name the signing scheme, name only headers this verifier understands, and every header
/// it names must be present) and the scheme-specific signed times.
pub(super) fn check_headers(
    content_type: Option<&str>,
    critical: &[String],
    present: &dyn Fn(&str) -> bool,
    signing_scheme: SigningScheme,
    authentic_signing_time: Option<SystemTime>,
) -> Result<(), String> {
    match content_type {
        Some(PAYLOAD_CONTENT_TYPE) => {}
        Some(other) => return Err(format!("unsupported payload content type {other:?}")),
        None => return Err("the content type header is missing".into()),
    }
    if let Some(unknown) = critical.iter().find(|c| !KNOWN_CRITICAL.contains(&c.as_str())) {
        return Err(format!("unknown critical header {unknown:?}"));
    }
    if !critical.iter().any(|c| c == SIGNING_SCHEME) {
        return Err(format!("the critical header list does not name {SIGNING_SCHEME}"));
    }
    for name in [AUTHENTIC_SIGNING_TIME, EXPIRY] {
        if present(name) && !critical.iter().any(|c| c == name) {
            return Err(format!("{name} is present but not marked critical"));
        }
    }
    if let Some(missing) = critical.iter().find(|c| !present(c)) {
        return Err(format!("critical header {missing:?} is missing"));
    }
    match (signing_scheme, authentic_signing_time) {
        (SigningScheme::SigningAuthority, None) => {
            Err(format!("signing scheme notary.x509.signingAuthority requires {AUTHENTIC_SIGNING_TIME}"))
        }
        (SigningScheme::X509, Some(_)) => Err(format!("{AUTHENTIC_SIGNING_TIME} is only valid under notary.x509.signingAuthority")),
        _ => Ok(()),
    }
}

/// Checks that the payload's `targetArtifact` is the subject being mirrored: media type,
/// digest and size all equal (annotations are the signer's metadata and not compared).
pub(super) fn check_payload(payload: &[u8], subject: &Subject) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Payload {
        target_artifact: Target,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Target {
        media_type: String,
        digest: String,
        size: u64,
    }
    let p: Payload = serde_json::from_slice(payload).map_err(|e| format!("the payload is not a Notary Project payload: {e}"))?;
    let t = p.target_artifact;
    if t.digest != subject.digest {
        return Err(format!("the signature is for {}, not for {}", t.digest, subject.digest));
    }
    if t.media_type != subject.media_type {
        return Err(format!("the signed media type {:?} is not the image's {:?}", t.media_type, subject.media_type));
    }
    if t.size != subject.size {
        return Err(format!("the signed size {} is not the image's {}", t.size, subject.size));
    }
    Ok(())
}

/// Seconds since the epoch as an instant (negative: before 1970, refused).
pub(super) fn epoch_seconds(secs: i64) -> Result<SystemTime, String> {
    u64::try_from(secs)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .map_err(|_| format!("time {secs} is before 1970"))
}

/// Parses an RFC 3339 date-time (`2024-06-18T15:21:38+08:00`, `2022-07-29T00:00:00Z`, with
/// optional fractional seconds, which are dropped).
pub(super) fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    // The one RFC 3339 reader (`crate::time`), held to the signed form: a `T` between date and
    // time (it also takes the space registries' listings sometimes write) and no white space.
    if s.as_bytes().get(10) == Some(&b' ') || s.trim() != s {
        return Err(format!("{s:?} is not an RFC 3339 date-time"));
    }
    crate::time::parse_rfc3339(s).ok_or_else(|| format!("{s:?} is not an RFC 3339 date-time (or is before 1970)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks RFC 3339 parsing with a zone offset, with `Z` and with fractional seconds against
    /// instants computed independently (date -u -d ... +%s), and that malformed text is refused.
    #[test]
    fn rfc3339_times_parse() {
        let at = |s| parse_rfc3339(s).unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(at("2024-06-18T15:21:38+08:00"), 1_718_695_298);
        assert_eq!(at("2022-07-29T23:59:00Z"), 1_659_139_140);
        assert_eq!(at("2120-11-09T07:00:00.123Z"), 4_760_578_800);
        assert_eq!(at("2023-01-11T10:02:54-08:00"), 1_673_460_174);
        for bad in ["2024-06-18 15:21:38Z", "2024-13-01T00:00:00Z", "2024-06-18T15:21:38", "x"] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
