//! Verification against the Notary Project's own test data (tests/data/notation/README.md says
//! where each file comes from), plus envelopes and keys made here for the cases the real data
//! does not cover (an unknown critical header, ECDSA envelopes, cosign).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

/// 2025-06-01T00:00:00Z: after every timestamp in the data, before its certificates expire
/// (except the ones meant to be expired), so the tests do not age.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_748_736_000)
}

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/notation").join(path)
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(data(path)).unwrap()
}

/// The image the timestamp envelopes (verifier/testdata/timestamp/sigEnv) sign.
fn ts_subject() -> Subject {
    Subject {
        media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
        digest: "sha256:c0669ef34cdc14332c0f1ab0c2c01acb91d96014b172f1a76f3a39e63d1f0bda".into(),
        size: 528,
    }
}

/// The image the mock envelopes (internal/mock/testdata) sign.
fn mock_subject() -> Subject {
    Subject {
        media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
        digest: "sha256:60043cf45eaebc4c0867fea485a039b598f52fd09fd5b07b0b2d2f88fad9d74e".into(),
        size: 528,
    }
}

fn cose(bytes: Vec<u8>) -> Signature {
    Signature::Notation { envelope_media_type: "application/cose".into(), envelope: bytes }
}

fn jws(bytes: Vec<u8>) -> Signature {
    Signature::Notation { envelope_media_type: "application/jose+json".into(), envelope: bytes }
}

/// A one-statement policy with the global scope.
fn policy(level: &str, stores: &[&str], identities: &[&str], extra: &str) -> String {
    serde_json::json!({
        "version": "1.0",
        "trustPolicies": [{
            "name": "test",
            "registryScopes": ["*"],
            "signatureVerification": serde_json::from_str::<serde_json::Value>(
                &format!("{{\"level\": \"{level}\"{extra}}}")).unwrap(),
            "trustStores": stores,
            "trustedIdentities": identities,
        }]
    })
    .to_string()
}

/// A verifier over the committed trust store with `policy_json` written to a temporary file.
fn verifier(policy_json: &str) -> Verifier {
    verifier_with_store(policy_json, &data("truststore"))
}

fn verifier_with_store(policy_json: &str, store: &Path) -> Verifier {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trustpolicy.json");
    std::fs::write(&path, policy_json).unwrap();
    Verifier::load(Some((&path, store)), &[]).unwrap()
}

const SOURCE: &str = "registry.example/team/app:1.0";

fn invalid_reason(outcome: Outcome) -> String {
    match outcome {
        Outcome::Invalid { reason } => reason,
        other => panic!("expected invalid, got {other:?}"),
    }
}

fn signer(outcome: Outcome) -> String {
    match outcome {
        Outcome::Verified { signer } => signer,
        other => panic!("expected verified, got {other:?}"),
    }
}

fn strict_with_tsa() -> Verifier {
    verifier(&policy("strict", &["ca:valid-trust-store", "tsa:test-timestamp"], &["*"], ""))
}

/// Checks that notation's valid COSE and JWS envelopes with GlobalSign timestamps verify under
/// strict with the timestamp checked against the tsa store, naming the leaf's subject.
#[test]
fn real_cose_and_jws_envelopes_with_timestamps_verify() {
    let v = strict_with_tsa();
    for sig in [cose(read("envelopes/coseWithTimestamp.sig")), jws(read("envelopes/jwsWithTimestamp.sig"))] {
        let who = signer(v.verify(SOURCE, &ts_subject(), &[sig], now()));
        assert_eq!(who, "CN=alpine,O=Notary,L=Seattle,ST=WA,C=US");
    }
}

/// Checks the expiry rule both ways with real envelopes whose signing certificate lived ten
/// minutes on 2024-06-18: with the tsa store the verified timestamp proves it was valid when
/// signing (verified under strict); without one the certificate is judged now and is expired;
/// under permissive that failure is only logged.
#[test]
fn expired_certificate_passes_only_with_a_verified_timestamp() {
    let with_tsa = verifier(&policy("strict", &["ca:from-envelopes", "tsa:test-timestamp"], &["*"], ""));
    let without_tsa = verifier(&policy("strict", &["ca:from-envelopes"], &["*"], ""));
    let permissive = verifier(&policy("permissive", &["ca:from-envelopes"], &["*"], ""));
    for sig in [cose(read("envelopes/coseExpiredWithTimestamp.sig")), jws(read("envelopes/jwsExpiredWithTimestamp.sig"))] {
        let sigs = [sig];
        assert_eq!(signer(with_tsa.verify(SOURCE, &ts_subject(), &sigs, now())), "CN=testTSA,O=Notary,L=Seattle,ST=WA,C=US");
        let reason = invalid_reason(without_tsa.verify(SOURCE, &ts_subject(), &sigs, now()));
        assert!(reason.contains("was not valid at the time of verification"), "{reason}");
        assert!(matches!(permissive.verify(SOURCE, &ts_subject(), &sigs, now()), Outcome::Verified { .. }));
    }
}

/// Checks that a verified timestamp outside the signing certificate's validity fails: notation's
/// envelopes whose certificate expired in 2001 (COSE) or starts in 2099 (JWS).
#[test]
fn timestamp_outside_the_certificate_validity_is_invalid() {
    let v = verifier(&policy("strict", &["ca:from-envelopes", "ca:valid-trust-store", "tsa:test-timestamp"], &["*"], ""));
    for sig in [cose(read("envelopes/timestampAfterNotAfter.sig")), jws(read("envelopes/timestampBeforeNotBefore.sig"))] {
        let reason = invalid_reason(v.verify(SOURCE, &ts_subject(), &[sig], now()));
        assert!(reason.contains("was not valid at the time its timestamp proves"), "{reason}");
    }
}

/// Checks `verifyTimestamp`: with a tsa store and "always" an envelope without a timestamp
/// fails; with "afterCertExpiry" and an unexpired certificate it verifies.
#[test]
fn missing_timestamp_fails_only_when_the_policy_requires_it() {
    let sig = [jws(read("envelopes/withoutTimestamp.sig"))];
    let reason = invalid_reason(strict_with_tsa().verify(SOURCE, &ts_subject(), &sig, now()));
    assert!(reason.contains("no timestamp countersignature"), "{reason}");
    let after = verifier(&policy(
        "strict",
        &["ca:valid-trust-store", "tsa:test-timestamp"],
        &["*"],
        ", \"verifyTimestamp\": \"afterCertExpiry\"",
    ));
    assert!(matches!(after.verify(SOURCE, &ts_subject(), &sig, now()), Outcome::Verified { .. }));
}

/// Checks that a timestamp whose TSA does not chain to the policy's tsa store (DigiCert's root
/// instead of GlobalSign's) fails.
#[test]
fn timestamp_from_an_untrusted_tsa_is_invalid() {
    let v = verifier(&policy("strict", &["ca:valid-trust-store", "tsa:test-mismatch"], &["*"], ""));
    let reason = invalid_reason(v.verify(SOURCE, &ts_subject(), &[cose(read("envelopes/coseWithTimestamp.sig"))], now()));
    assert!(reason.contains("does not chain to the tsa trust store"), "{reason}");
}

/// Checks integrity: one changed byte in the payload of a real COSE and a real JWS envelope
/// fails the signature check, and notation's invalid envelope (ca_invalid_sig_env.json) fails.
#[test]
fn tampered_envelopes_are_invalid() {
    let mut bytes = read("envelopes/coseWithTimestamp.sig");
    let at = bytes.windows(14).position(|w| w == b"sha256:c0669ef").unwrap() + 7;
    bytes[at] = b'd';
    let mut subject = ts_subject();
    subject.digest = subject.digest.replacen("sha256:c", "sha256:d", 1);
    let reason = invalid_reason(strict_with_tsa().verify(SOURCE, &subject, &[cose(bytes)], now()));
    assert!(reason.contains("signature does not verify"), "{reason}");

    // JWS: one payload character changed (still base64url) in notation's valid envelope.
    let v = verifier(&policy("audit", &["ca:valid-trust-store"], &["*"], ""));
    let text = String::from_utf8(read("envelopes/ca_valid_sig_env.json")).unwrap();
    let tampered = text.replacen("\"payload\": \"eyJ0", "\"payload\": \"eyJ1", 1);
    assert_ne!(tampered, text);
    let reason = invalid_reason(v.verify(SOURCE, &mock_subject(), &[jws(tampered.into_bytes())], now()));
    assert!(reason.contains("signature does not verify"), "{reason}");
    // notation's own invalid envelope: a '=' appended to the payload after signing.
    let reason = invalid_reason(v.verify(SOURCE, &mock_subject(), &[jws(read("envelopes/ca_invalid_sig_env.json"))], now()));
    assert!(reason.contains("payload is not base64url"), "{reason}");
}

/// Checks that the payload must name the image being mirrored: another digest, size or media
/// type makes a valid signature invalid for this subject, under every level but skip.
#[test]
fn signature_for_another_image_is_invalid() {
    let v = verifier(&policy("audit", &["ca:valid-trust-store", "tsa:test-timestamp"], &["*"], ""));
    let sig = [cose(read("envelopes/coseWithTimestamp.sig"))];
    let mut other = ts_subject();
    other.digest = format!("sha256:{}", "0".repeat(64));
    assert!(invalid_reason(v.verify(SOURCE, &other, &sig, now())).contains("is for sha256:c0669ef3"));
    let mut other = ts_subject();
    other.size = 529;
    assert!(invalid_reason(v.verify(SOURCE, &other, &sig, now())).contains("signed size 528"));
    let mut other = ts_subject();
    other.media_type = "application/vnd.oci.image.manifest.v1+json".into();
    assert!(invalid_reason(v.verify(SOURCE, &other, &sig, now())).contains("signed media type"));
}

/// Checks a two-certificate chain (PS384, RSA 3072) to a CA store with an `x509.subject`
/// identity, and the `io.cncf.notary.expiry` attribute: expired in 2022, it fails under strict
/// and is only logged under permissive.
#[test]
fn ca_chain_identity_and_expiry_attribute() {
    let identity = ["x509.subject: C=US, ST=WA, O=Notary, CN=Notation Test Root"];
    let strict = verifier(&policy("strict", &["ca:valid-trust-store"], &identity, ""));
    let valid = [jws(read("envelopes/ca_valid_sig_env.json"))];
    assert_eq!(signer(strict.verify(SOURCE, &mock_subject(), &valid, now())), "CN=Notation Test Root,O=Notary,L=Seattle,ST=WA,C=US");
    let expired = [jws(read("envelopes/ca_expired_sig_env.json"))];
    let reason = invalid_reason(strict.verify(SOURCE, &mock_subject(), &expired, now()));
    assert!(reason.contains("the signature expired at 2022-07-29T23:59:00Z"), "{reason}");
    let permissive = verifier(&policy("permissive", &["ca:valid-trust-store"], &identity, ""));
    assert!(matches!(permissive.verify(SOURCE, &mock_subject(), &expired, now()), Outcome::Verified { .. }));
}

/// Checks the `notary.x509.signingAuthority` scheme: it verifies against a signingAuthority
/// store, not against a ca store, and its expiry attribute is enforced under strict.
#[test]
fn signing_authority_scheme() {
    let sa = verifier(&policy("strict", &["signingAuthority:valid-trust-store"], &["*"], ""));
    let valid = [jws(read("envelopes/sa_valid_sig_env.json"))];
    assert!(matches!(sa.verify(SOURCE, &mock_subject(), &valid, now()), Outcome::Verified { .. }));
    let ca = verifier(&policy("strict", &["ca:valid-trust-store"], &["*"], ""));
    let reason = invalid_reason(ca.verify(SOURCE, &mock_subject(), &valid, now()));
    assert!(reason.contains("names no signingAuthority trust store"), "{reason}");
    let reason = invalid_reason(sa.verify(SOURCE, &mock_subject(), &[jws(read("envelopes/sa_expired_sig_env.json"))], now()));
    assert!(reason.contains("expired"), "{reason}");
}

/// Checks authenticity failures: a subject that is not a trusted identity, and a chain that
/// leads to no certificate of the named store; audit only logs authenticity.
#[test]
fn untrusted_identity_or_ca_is_invalid_except_under_audit() {
    let sig = [jws(read("envelopes/ca_valid_sig_env.json"))];
    let other = ["x509.subject: C=US, ST=WA, O=Somebody Else"];
    let v = verifier(&policy("strict", &["ca:valid-trust-store"], &other, ""));
    let reason = invalid_reason(v.verify(SOURCE, &mock_subject(), &sig, now()));
    assert!(reason.contains("is not a trusted identity"), "{reason}");
    let v = verifier(&policy("strict", &["ca:from-envelopes"], &["*"], ""));
    let reason = invalid_reason(v.verify(SOURCE, &mock_subject(), &sig, now()));
    assert!(reason.contains("does not lead to a certificate of the trust policy's ca stores"), "{reason}");
    let audit = verifier(&policy("audit", &["ca:from-envelopes"], &other, ""));
    assert!(matches!(audit.verify(SOURCE, &mock_subject(), &sig, now()), Outcome::Verified { .. }));
}

/// Checks the outcome of an image with no signature, one no policy covers, and one whose policy
/// says skip; and that the best failure is reported when several signatures fail.
#[test]
fn unsigned_not_covered_and_several_signatures() {
    let doc = serde_json::json!({
        "version": "1.0",
        "trustPolicies": [
            {"name": "mcr", "registryScopes": ["mcr.microsoft.com/dotnet/runtime", "docker.io/library/nginx"],
             "signatureVerification": {"level": "strict"},
             "trustStores": ["ca:valid-trust-store"], "trustedIdentities": ["*"]},
            {"name": "legacy", "registryScopes": ["mcr.microsoft.com/legacy/app"],
             "signatureVerification": {"level": "skip"}}
        ]
    })
    .to_string();
    let v = verifier(&doc);
    assert!(v.covers("mcr.microsoft.com/dotnet/runtime:8.0"));
    assert!(v.covers("nginx:1.25"), "Docker Hub short names are scoped fully qualified");
    assert!(!v.covers("mcr.microsoft.com/legacy/app:1"), "skip covers nothing");
    assert!(!v.covers("mcr.microsoft.com/dotnet/sdk:8.0"));
    assert_eq!(v.verify("mcr.microsoft.com/dotnet/sdk:8.0", &mock_subject(), &[], now()), Outcome::NotCovered);
    assert_eq!(v.verify("mcr.microsoft.com/legacy/app:1", &mock_subject(), &[], now()), Outcome::NotCovered);
    assert_eq!(v.verify("mcr.microsoft.com/dotnet/runtime:8.0", &mock_subject(), &[], now()), Outcome::Unsigned);
    // A cosign signature is no signature for a Notary Project policy.
    let cosign_only = [Signature::Cosign { payload: b"{}".to_vec(), signature_b64: "AA==".into() }];
    assert_eq!(v.verify("mcr.microsoft.com/dotnet/runtime:8.0", &mock_subject(), &cosign_only, now()), Outcome::Unsigned);
    // Two failing signatures: the one that got as far as authenticity is the reason given.
    let sigs = [cose(read("envelopes/coseWithTimestamp.sig")), jws(read("envelopes/ca_expired_sig_env.json"))];
    let reason = invalid_reason(v.verify("mcr.microsoft.com/dotnet/runtime:8.0", &mock_subject(), &sigs, now()));
    assert!(reason.contains("expired at 2022") && reason.contains("2 signatures checked"), "{reason}");
    // One valid among invalid ones verifies.
    let sigs = [cose(read("envelopes/coseWithTimestamp.sig")), jws(read("envelopes/ca_valid_sig_env.json"))];
    assert!(matches!(v.verify("mcr.microsoft.com/dotnet/runtime:8.0", &mock_subject(), &sigs, now()), Outcome::Verified { .. }));
}

/// Checks the RFC 3161 module alone on GlobalSign tokens from notation's test data: the valid
/// token over "notation" yields its genTime ± its one second of accuracy; the same token over
/// other bytes, the token with a broken signature and the one with a malformed TSTInfo fail.
#[test]
fn timestamp_tokens() {
    let roots = store::TrustStore::load(
        &data("truststore"),
        &[policy::StoreRef { kind: StoreKind::Tsa, name: "test-timestamp".into() }],
    )
    .unwrap();
    let refs = [policy::StoreRef { kind: StoreKind::Tsa, name: "test-timestamp".into() }];
    let roots: Vec<Cert> = roots.certificates(&refs, StoreKind::Tsa).cloned().collect();
    let token = read("timestamp/TimeStampToken.p7s");
    let ts = timestamp::verify(&token, b"notation", &roots).unwrap();
    let gen_time = envelope::parse_rfc3339("2021-09-17T14:09:10Z").unwrap();
    assert_eq!(ts.earliest, gen_time - Duration::from_secs(1));
    assert_eq!(ts.latest, gen_time + Duration::from_secs(1));
    let err = timestamp::verify(&token, b"mismatch", &roots).unwrap_err();
    assert!(err.contains("over other bytes"), "{err}");
    let err = timestamp::verify(&read("timestamp/TimeStampTokenWithInvalidSignature.p7s"), b"notation", &roots).unwrap_err();
    assert!(err.contains("signature"), "{err}");
    let err = timestamp::verify(&read("timestamp/TimeStampTokenWithInvalidTSTInfo.p7s"), b"notation", &roots).unwrap_err();
    assert!(err.contains("TSTInfo"), "{err}");
}
