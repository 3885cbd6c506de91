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

fn verified_signer(outcome: Outcome) -> String {
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
        let who = verified_signer(v.verify(SOURCE, &ts_subject(), &[sig], now()));
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
        assert_eq!(verified_signer(with_tsa.verify(SOURCE, &ts_subject(), &sigs, now())), "CN=testTSA,O=Notary,L=Seattle,ST=WA,C=US");
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
/// and is only logged under permissive, and `override` moves it either way.
#[test]
fn ca_chain_identity_and_expiry_attribute() {
    let identity = ["x509.subject: C=US, ST=WA, O=Notary, CN=Notation Test Root"];
    let strict = verifier(&policy("strict", &["ca:valid-trust-store"], &identity, ""));
    let valid = [jws(read("envelopes/ca_valid_sig_env.json"))];
    assert_eq!(verified_signer(strict.verify(SOURCE, &mock_subject(), &valid, now())), "CN=Notation Test Root,O=Notary,L=Seattle,ST=WA,C=US");
    let expired = [jws(read("envelopes/ca_expired_sig_env.json"))];
    let reason = invalid_reason(strict.verify(SOURCE, &mock_subject(), &expired, now()));
    assert!(reason.contains("the signature expired at 2022-07-29T23:59:00Z"), "{reason}");
    let permissive = verifier(&policy("permissive", &["ca:valid-trust-store"], &identity, ""));
    assert!(matches!(permissive.verify(SOURCE, &mock_subject(), &expired, now()), Outcome::Verified { .. }));
    // strict with `override: {expiry: log}` accepts it too; permissive with expiry enforced does not.
    let relaxed = verifier(&policy("strict", &["ca:valid-trust-store"], &identity, ", \"override\": {\"expiry\": \"log\"}"));
    assert!(matches!(relaxed.verify(SOURCE, &mock_subject(), &expired, now()), Outcome::Verified { .. }));
    let tightened = verifier(&policy("permissive", &["ca:valid-trust-store"], &identity, ", \"override\": {\"expiry\": \"enforce\"}"));
    assert!(matches!(tightened.verify(SOURCE, &mock_subject(), &expired, now()), Outcome::Invalid { .. }));
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

/// A self-signed code signing certificate for a key made here, in a trust store of its own.
struct MadeSigner {
    pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
    store: tempfile::TempDir,
}

fn made_signer(signing: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm, alg: &'static rcgen::SignatureAlgorithm) -> MadeSigner {
    made_signer_for(signing, alg, rcgen::ExtendedKeyUsagePurpose::CodeSigning)
}

fn made_signer_for(
    signing: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm,
    alg: &'static rcgen::SignatureAlgorithm,
    eku: rcgen::ExtendedKeyUsagePurpose,
) -> MadeSigner {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap().as_ref().to_vec();
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), alg).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    for (t, v) in [(rcgen::DnType::CountryName, "US"), (rcgen::DnType::StateOrProvinceName, "WA"), (rcgen::DnType::OrganizationName, "Made Here")] {
        params.distinguished_name.push(t, v);
    }
    params.distinguished_name.push(rcgen::DnType::CommonName, "signer");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let store = tempfile::tempdir().unwrap();
    let dir = store.path().join("x509/ca/made");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("signer.pem"), cert.pem()).unwrap();
    MadeSigner { pkcs8, cert_der: cert.der().to_vec(), store }
}

/// A Notary Project payload for `subject`.
fn payload_for(subject: &Subject) -> Vec<u8> {
    serde_json::json!({"targetArtifact": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size}})
        .to_string()
        .into_bytes()
}

/// A COSE_Sign1 envelope as the specification lays it out, signed with `signer`'s key.
fn made_cose(
    signer: &MadeSigner,
    signing: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm,
    alg: coset::iana::Algorithm,
    critical: &[&str],
    subject: &Subject,
) -> Vec<u8> {
    use coset::cbor::value::Value;
    use coset::TaggedCborSerializable as _;
    let mut protected = coset::HeaderBuilder::new()
        .algorithm(alg)
        .content_type(envelope::PAYLOAD_CONTENT_TYPE.to_string())
        .text_value(envelope::SIGNING_SCHEME.to_string(), Value::Text("notary.x509".into()))
        .text_value(envelope::SIGNING_TIME.to_string(), Value::Tag(1, Box::new(Value::Integer(1_735_689_600.into()))));
    for c in critical {
        protected = protected.add_critical_label(coset::RegisteredLabelWithPrivate::Text(c.to_string()));
        if *c != envelope::SIGNING_SCHEME {
            protected = protected.text_value(c.to_string(), Value::Text("must be understood".into()));
        }
    }
    let unprotected = coset::HeaderBuilder::new().value(33, Value::Array(vec![Value::Bytes(signer.cert_der.clone())]));
    let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(signing, &signer.pkcs8).unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let sign1 = coset::CoseSign1Builder::new()
        .protected(protected.build())
        .unprotected(unprotected.build())
        .payload(payload_for(subject))
        .create_signature(&[], |tbs| key.sign(&rng, tbs).unwrap().as_ref().to_vec())
        .build();
    sign1.to_tagged_vec().unwrap()
}

/// A JWS envelope as the specification lays it out, signed with `signer`'s key.
fn made_jws(signer: &MadeSigner, signing: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm, alg: &str, subject: &Subject) -> Vec<u8> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let protected = serde_json::json!({
        "alg": alg,
        "crit": [envelope::SIGNING_SCHEME],
        "cty": envelope::PAYLOAD_CONTENT_TYPE,
        envelope::SIGNING_SCHEME: "notary.x509",
        envelope::SIGNING_TIME: "2025-01-01T00:00:00Z",
    });
    let protected = URL_SAFE_NO_PAD.encode(protected.to_string());
    let payload = URL_SAFE_NO_PAD.encode(payload_for(subject));
    let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(signing, &signer.pkcs8).unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let signature = key.sign(&rng, format!("{protected}.{payload}").as_bytes()).unwrap();
    serde_json::json!({
        "payload": payload,
        "protected": protected,
        "header": {"x5c": [STANDARD.encode(&signer.cert_der)], "io.cncf.notary.signingAgent": "acr-mirror tests"},
        "signature": URL_SAFE_NO_PAD.encode(signature.as_ref()),
    })
    .to_string()
    .into_bytes()
}

fn made_verifier(signer: &MadeSigner, identity: &str) -> Verifier {
    verifier_with_store(&policy("strict", &["ca:made"], &[identity], ""), signer.store.path())
}

/// Checks ECDSA envelopes made here (COSE with P-256/ES256, P-384/ES384, P-521/ES512; JWS with
/// P-384/ES384) verify under strict with an `x509.subject` identity naming part of the subject;
/// that a JWS carrying another key's signature, an `alg` not matching the key (ES384 on a
/// P-256 key) and a signing certificate for TLS servers are refused; and that an unknown critical header, or a signing scheme header not
/// marked critical, makes an otherwise valid signature invalid.
#[test]
fn ecdsa_envelopes_alg_binding_and_unknown_critical_headers() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, ECDSA_P521_SHA512_FIXED_SIGNING};
    use coset::iana::Algorithm;
    let subject = mock_subject();
    let p256 = made_signer(&ECDSA_P256_SHA256_FIXED_SIGNING, &rcgen::PKCS_ECDSA_P256_SHA256);
    let p384 = made_signer(&ECDSA_P384_SHA384_FIXED_SIGNING, &rcgen::PKCS_ECDSA_P384_SHA384);
    let identity = "x509.subject: C=US, S=WA, O=Made Here";
    let scheme = [envelope::SIGNING_SCHEME];
    let p521 = made_signer(&ECDSA_P521_SHA512_FIXED_SIGNING, &rcgen::PKCS_ECDSA_P521_SHA512);
    for (signer, signing, alg) in [
        (&p256, &ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES256),
        (&p384, &ECDSA_P384_SHA384_FIXED_SIGNING, Algorithm::ES384),
        (&p521, &ECDSA_P521_SHA512_FIXED_SIGNING, Algorithm::ES512),
    ] {
        let env = made_cose(signer, signing, alg, &scheme, &subject);
        let who = verified_signer(made_verifier(signer, identity).verify(SOURCE, &subject, &[cose(env)], now()));
        // rcgen writes CN first; RFC 4514 text lists the RDNs last to first.
        assert_eq!(who, "O=Made Here,ST=WA,C=US,CN=signer");
    }
    // The same in a JWS envelope (ES384), and with the signature of another key.
    let env = made_jws(&p384, &ECDSA_P384_SHA384_FIXED_SIGNING, "ES384", &subject);
    assert!(matches!(made_verifier(&p384, identity).verify(SOURCE, &subject, &[jws(env)], now()), Outcome::Verified { .. }));
    let mut env: serde_json::Value = serde_json::from_slice(&made_jws(&p384, &ECDSA_P384_SHA384_FIXED_SIGNING, "ES384", &subject)).unwrap();
    let other: serde_json::Value = serde_json::from_slice(&made_jws(&made_signer(&ECDSA_P384_SHA384_FIXED_SIGNING, &rcgen::PKCS_ECDSA_P384_SHA384), &ECDSA_P384_SHA384_FIXED_SIGNING, "ES384", &subject)).unwrap();
    env["signature"] = other["signature"].clone();
    let reason = invalid_reason(made_verifier(&p384, identity).verify(SOURCE, &subject, &[jws(env.to_string().into_bytes())], now()));
    assert!(reason.contains("signature does not verify"), "{reason}");
    // ES384 claimed over a P-256 key: the signature is real but the algorithm is not the key's.
    let env = made_cose(&p256, &ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES384, &scheme, &subject);
    let reason = invalid_reason(made_verifier(&p256, identity).verify(SOURCE, &subject, &[cose(env)], now()));
    assert!(reason.contains("does not match the signing key"), "{reason}");
    // An unknown critical header.
    let env = made_cose(&p256, &ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES256, &[envelope::SIGNING_SCHEME, "com.example.mustUnderstand"], &subject);
    let reason = invalid_reason(made_verifier(&p256, identity).verify(SOURCE, &subject, &[cose(env)], now()));
    assert!(reason.contains("unknown critical header \"com.example.mustUnderstand\""), "{reason}");
    // A certificate for TLS servers is no code signing certificate, even self-signed and trusted.
    let tls = made_signer_for(&ECDSA_P256_SHA256_FIXED_SIGNING, &rcgen::PKCS_ECDSA_P256_SHA256, rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let env = made_cose(&tls, &ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES256, &scheme, &subject);
    let reason = invalid_reason(made_verifier(&tls, identity).verify(SOURCE, &subject, &[cose(env)], now()));
    assert!(reason.contains("is not allowed for code signing"), "{reason}");
    // The signing scheme header not marked critical.
    let env = made_cose(&p256, &ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES256, &[], &subject);
    let reason = invalid_reason(made_verifier(&p256, identity).verify(SOURCE, &subject, &[cose(env)], now()));
    assert!(reason.contains("does not name io.cncf.notary.signingScheme"), "{reason}");
}

/// The cosign simple-signing payload for `digest`.
fn simple_signing(digest: &str) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": {"docker-reference": "ghcr.io/fluxcd/flux-cli"},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    })
    .to_string()
    .into_bytes()
}

/// Checks cosign verification with a P-256 key (ASN.1 ECDSA over SHA-256, as cosign signs) and
/// an Ed25519 key made here: the payload naming the subject verifies with the key's
/// fingerprint as signer; a payload for another digest, a signature by another key, and a
/// reference outside the key's scope do not.
#[test]
fn cosign_signatures() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let dir = tempfile::tempdir().unwrap();
    let p256_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let p256 = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, p256_pkcs8.as_ref()).unwrap();
    let p256_pem = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&p256_pkcs8.as_ref().into(), &rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .public_key_pem();
    let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
    let ed_pem =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&ed_pkcs8.as_ref().into(), &rcgen::PKCS_ED25519).unwrap().public_key_pem();
    std::fs::write(dir.path().join("p256.pub"), &p256_pem).unwrap();
    std::fs::write(dir.path().join("ed.pub"), &ed_pem).unwrap();
    let v = Verifier::load(
        None,
        &[("ghcr.io/fluxcd/*".to_string(), dir.path().join("p256.pub")), ("docker.io/library/*".to_string(), dir.path().join("ed.pub"))],
    )
    .unwrap();
    let subject = mock_subject();
    let payload = simple_signing(&subject.digest);

    let sig = Signature::Cosign { payload: payload.clone(), signature_b64: b64(p256.sign(&rng, &payload).unwrap().as_ref()) };
    let who = verified_signer(v.verify("ghcr.io/fluxcd/flux-cli:v2.3.0", &subject, std::slice::from_ref(&sig), now()));
    let spki = pem_rfc7468::decode_vec(p256_pem.as_bytes()).unwrap().1;
    assert_eq!(who, format!("sha256:{}", hex::encode(crypto::Hash::Sha256.digest(&spki))));
    assert_eq!(v.verify("quay.io/other/image:1", &subject, std::slice::from_ref(&sig), now()), Outcome::NotCovered);
    assert!(v.covers("nginx:1.25"), "a scope matches the normalised reference too");
    assert!(v.covers("ghcr.io/fluxcd/sub/image:1"), "`*` matches across '/', as docs/provenance.md says");

    let ed_sig = Signature::Cosign { payload: payload.clone(), signature_b64: b64(ed.sign(&payload).as_ref()) };
    assert!(matches!(v.verify("nginx:1.25", &subject, &[ed_sig], now()), Outcome::Verified { .. }));

    let other = simple_signing(&format!("sha256:{}", "1".repeat(64)));
    let wrong_digest = Signature::Cosign { payload: other.clone(), signature_b64: b64(p256.sign(&rng, &other).unwrap().as_ref()) };
    let reason = invalid_reason(v.verify("ghcr.io/fluxcd/flux-cli:v2.3.0", &subject, &[wrong_digest], now()));
    assert!(reason.contains("is for sha256:1111"), "{reason}");

    let wrong_key = Signature::Cosign { payload: payload.clone(), signature_b64: b64(ed.sign(&payload).as_ref()) };
    let reason = invalid_reason(v.verify("ghcr.io/fluxcd/flux-cli:v2.3.0", &subject, &[wrong_key], now()));
    assert!(reason.contains("does not verify"), "{reason}");
}

/// Checks that each malformed trust policy is refused at load with the file's path and what is
/// wrong, as the specification's policy constraints say.
#[test]
fn malformed_trust_policies_are_refused_naming_the_file() {
    let stmt = |v: serde_json::Value| serde_json::json!({"version": "1.0", "trustPolicies": v}).to_string();
    let ok = serde_json::json!({"name": "a", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
        "trustStores": ["ca:valid-trust-store"], "trustedIdentities": ["*"]});
    let with = |key: &str, value: serde_json::Value| {
        let mut s = ok.clone();
        s[key] = value;
        stmt(serde_json::json!([s]))
    };
    let cases = [
        ("{not json".to_string(), "not a trust policy document"),
        (serde_json::json!({"version": "2.0", "trustPolicies": []}).to_string(), "unsupported trust policy version"),
        (stmt(serde_json::json!([])), "\"trustPolicies\" is empty"),
        (stmt(serde_json::json!([ok, ok])), "the name is used twice"),
        (with("signatureVerification", serde_json::json!({"level": "paranoid"})), "unknown verification level \"paranoid\""),
        (with("signatureVerification", serde_json::json!({"level": "skip"})), "skip level cannot be used with the global scope"),
        (with("signatureVerification", serde_json::json!({"level": "strict", "override": {"integrity": "log"}})), "integrity cannot be overridden"),
        (with("registryScopes", serde_json::json!(["mcr.microsoft.com/dotnet/runtime:8.0"])), "not a fully qualified repository"),
        (with("registryScopes", serde_json::json!(["*", "mcr.microsoft.com/x"])), "must be the only scope"),
        (with("trustStores", serde_json::json!(["x509:valid-trust-store"])), "unknown type \"x509\""),
        (with("trustStores", serde_json::json!(["ca:does-not-exist"])), "x509/ca/does-not-exist"),
        (with("trustedIdentities", serde_json::json!(["x509.subject: C=US, O=acme"])), "must name C, ST (or S) and O"),
        (
            with("trustedIdentities", serde_json::json!(["x509.subject: C=US, ST=WA, O=acme", "x509.subject: C=US, ST=WA, O=acme, OU=x"])),
            "trusted identities overlap",
        ),
        (with("trustedIdentities", serde_json::json!(["C=US, ST=WA, O=acme"])), "does not start with \"x509.subject:\""),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trustpolicy.json");
    for (json, want) in cases {
        std::fs::write(&path, &json).unwrap();
        let err = Verifier::load(Some((&path, &data("truststore"))), &[]).unwrap_err().to_string();
        assert!(err.contains(want), "{json}\n→ {err}");
        assert!(err.contains("trustpolicy.json") || err.contains("does-not-exist"), "{err}");
    }
    let missing = dir.path().join("absent.json");
    let err = Verifier::load(Some((&missing, &data("truststore"))), &[]).unwrap_err().to_string();
    assert!(err.contains("absent.json"), "{err}");
}

/// Checks notation's trust store rules on its own bad stores: a leaf that is neither CA nor
/// self-signed in a ca store, and a non-CA certificate in a tsa store, fail naming the file.
#[test]
fn bad_trust_stores_are_refused_naming_the_file() {
    for (store, file) in [("ca:trust-store-with-leaf-certs", "non-ca.crt"), ("tsa:test-nonCA", "wabbit-networks.io.crt")] {
        let stores: Vec<&str> = if store.starts_with("tsa") { vec!["ca:any", store] } else { vec![store] };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trustpolicy.json");
        std::fs::write(&path, policy("strict", &stores, &["*"], "")).unwrap();
        // The tsa case also names a ca store; give it one so the tsa store is what fails.
        let root = tempfile::tempdir().unwrap();
        copy_dir(&data("bad-stores"), root.path());
        std::fs::create_dir_all(root.path().join("x509/ca/any")).unwrap();
        std::fs::copy(data("truststore/x509/ca/valid-trust-store/NotationTestRoot.pem"), root.path().join("x509/ca/any/root.pem")).unwrap();
        let err = Verifier::load(Some((&path, root.path())), &[]).unwrap_err().to_string();
        assert!(err.contains(file), "{err}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Checks that a cosign key file holding a private key, or no PEM at all, is refused naming
/// the file, and that the message carries none of the file's contents.
#[test]
fn bad_cosign_keys_are_refused_without_printing_them() {
    let dir = tempfile::tempdir().unwrap();
    let private = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let cases = [("private.pem", private.clone(), "holds a private key"), ("garbage.pub", "hello\nworld\n".to_string(), "not a PEM public key")];
    for (name, contents, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &contents).unwrap();
        let err = Verifier::load(None, &[("*".to_string(), path)]).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(want), "{err}");
        for line in contents.lines().filter(|l| l.len() > 4 && !l.starts_with("-----")) {
            assert!(!err.contains(line), "the error prints key material: {err}");
        }
    }
}

/// Checks notation's signatures of the manifest in its OCI layout test data against the
/// manifest's own bytes: the subject is computed from the blob (digest, size, media type), so
/// the payload binding is tested against a real artifact, in both envelope formats; one byte
/// more in the manifest and the same signatures are for another image.
#[test]
fn real_signatures_bind_to_the_real_manifest() {
    let manifest = read("artifact/manifest-19dbd2e4.json");
    let media_type = serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["mediaType"].as_str().unwrap().to_string();
    let subject = Subject { media_type, digest: crate::digest::Digest::of(&manifest).to_string(), size: manifest.len() as u64 };
    let v = verifier(&policy("strict", &["ca:from-envelopes"], &["x509.subject: C=US, ST=WA, O=Notary, CN=alpine"], ""));
    let sigs = [cose(read("envelopes/cose_signature.sig")), jws(read("envelopes/jws_signature.sig"))];
    for sig in &sigs {
        assert_eq!(verified_signer(v.verify(SOURCE, &subject, std::slice::from_ref(sig), now())), "CN=alpine,O=Notary,L=Seattle,ST=WA,C=US");
    }
    let mut grown = manifest.clone();
    grown.push(b'\n');
    let other = Subject { digest: crate::digest::Digest::of(&grown).to_string(), size: grown.len() as u64, ..subject };
    assert!(matches!(v.verify(SOURCE, &other, &sigs, now()), Outcome::Invalid { .. }));
}
