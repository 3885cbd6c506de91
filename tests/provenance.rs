//! The provenance gate end to end (issue #18): `mirror plan`, `sync` and `verify` with
//! `signatures:` against real distribution registries, on images signed inside the tests by
//! implementations independent of the code under test — Notary Project COSE and JWS envelopes,
//! certificate chains and RFC 3161 timestamp tokens from tests/support/sign.py (pycose,
//! cryptography, asn1crypto), cosign keys and signatures from `openssl` — pushed next to their
//! images as referrers and `sha256-<hex>.sig` tags. What lands in the target is checked with raw
//! HTTP (tests/support/images.rs), not with the crate's client.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine;
use serde_json::{Value, json};
use support::images::{self, PushedImage};
use support::{Format, Seeder, TestRegistry};

const SRC: &str = "src.test";
const DST: &str = "dst.test";
const COSE: &str = "application/cose";
const JWS: &str = "application/jose+json";

/// The Python that runs tests/support/sign.py: `.venv-sign/` when scripts/setup.sh made one.
fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-sign/bin/python3");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Vec<u8> {
    let program = program.as_ref().to_owned();
    let out = std::process::Command::new(&program).args(args).output().expect("start the signing tool");
    assert!(
        out.status.success(),
        "{program:?} {args:?} (scripts/setup.sh test installs what it needs): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A folder with the PKI sign.py made (see its docstring), a cosign key pair from openssl, and
/// the config and its trust policy.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let sign_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sign.py");
        run(python(), &[sign_py.to_str().unwrap(), "pki", d]);
        for (name, curve) in [("cosign", "P-256"), ("stranger", "P-256")] {
            let key = format!("{d}/{name}.key");
            run(
                "openssl",
                &["genpkey", "-algorithm", "EC", "-pkeyopt", &format!("ec_paramgen_curve:{curve}"), "-out", &key],
            );
            run("openssl", &["pkey", "-in", &key, "-pubout", "-out", &format!("{d}/{name}.pub")]);
        }
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A Notary Project envelope over `image`'s descriptor, from sign.py with `flags`.
    fn notary(&self, image: &PushedImage, format: &str, flags: &[&str]) -> Vec<u8> {
        let subject = json!({"mediaType": image.media_type, "digest": image.digest.as_str(), "size": image.size});
        let out = self.path("envelope");
        let sign_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sign.py");
        let mut args = vec![
            sign_py.to_str().unwrap(),
            "sign",
            self.dir.path().to_str().unwrap(),
            out.to_str().unwrap(),
            "--format",
            format,
            "--subject",
        ];
        let subject = subject.to_string();
        args.push(&subject);
        args.extend_from_slice(flags);
        run(python(), &args);
        std::fs::read(out).unwrap()
    }

    /// A cosign simple-signing payload for `image` and its signature by the openssl key `key`
    /// (ECDSA P-256 over SHA-256, DER, base64: what cosign writes).
    fn cosign(&self, image: &PushedImage, repo: &str, key: &str) -> (Vec<u8>, String) {
        let payload = json!({
            "critical": {"identity": {"docker-reference": format!("{SRC}/{repo}")},
                         "image": {"docker-manifest-digest": image.digest.as_str()},
                         "type": "cosign container image signature"},
            "optional": null
        })
        .to_string()
        .into_bytes();
        let file = self.path("payload.json");
        std::fs::write(&file, &payload).unwrap();
        let key = self.path(&format!("{key}.key"));
        let sig = run("openssl", &["dgst", "-sha256", "-sign", key.to_str().unwrap(), file.to_str().unwrap()]);
        (payload, base64::engine::general_purpose::STANDARD.encode(sig))
    }

    /// Writes `mirror.yaml`: every image copied from SRC to DST under `prefix`, and the
    /// signatures section for `mode` (the trust policies cover `notary_repos` at level strict;
    /// cosign's key covers `src.test/cosign/*`).
    fn config(
        &self,
        src: &TestRegistry,
        dst: &TestRegistry,
        mode: &str,
        prefix: &str,
        notary_repos: &[&str],
        images: &[String],
    ) {
        self.config_mapping(src, dst, mode, &format!("target: {prefix}\n    mode: copy"), notary_repos, images)
    }

    /// [`Env::config`] with the mapping's `target:` and `mode:` lines given.
    fn config_mapping(
        &self,
        src: &TestRegistry,
        dst: &TestRegistry,
        mode: &str,
        mapping: &str,
        notary_repos: &[&str],
        images: &[String],
    ) {
        self.config_urls(&src.url(), &dst.url(), mode, mapping, notary_repos, images)
    }

    /// [`Env::config_mapping`] with the registries' endpoints given.
    fn config_urls(&self, src: &str, dst: &str, mode: &str, mapping: &str, notary_repos: &[&str], images: &[String]) {
        // Two policies, both strict: with a `tsa` store a signature must carry a timestamp (as
        // notation-go requires under the default `verifyTimestamp: always`), so only the
        // timestamped cases are under the one that names it.
        let mut policies = Vec::new();
        for (name, timestamped, stores) in
            [("test-images", false, json!(["ca:test"])), ("timestamped", true, json!(["ca:test", "tsa:test"]))]
        {
            let scopes: Vec<String> = notary_repos
                .iter()
                .filter(|r| r.contains("timestamped") == timestamped)
                .map(|r| format!("{SRC}/{r}"))
                .collect();
            if !scopes.is_empty() {
                policies.push(json!({
                    "name": name,
                    "registryScopes": scopes,
                    "signatureVerification": {"level": "strict"},
                    "trustStores": stores,
                    "trustedIdentities": ["x509.subject: C=US, ST=WA, O=Test, CN=Signer"]
                }));
            }
        }
        let policy = json!({"version": "1.0", "trustPolicies": policies});
        std::fs::write(self.path("trustpolicy.json"), serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
        let list: String = images.iter().map(|i| format!("  - {i}\n")).collect();
        let cfg = format!(
            "registries:\n  - host: {SRC}\n    endpoint: {}\n  - host: {DST}\n    endpoint: {}\n\
             target: {DST}\nmappings:\n  - source: \"*\"\n    {mapping}\nimages:\n{list}\
             transfer: {{images: 4, retries: 0}}\n\
             signatures:\n  mode: {mode}\n  notation: {{trustPolicy: trustpolicy.json, trustStore: truststore}}\n\
             \x20 cosign:\n    - {{scope: \"{SRC}/cosign/*\", key: cosign.pub}}\n",
            src, dst
        );
        std::fs::write(self.path("mirror.yaml"), cfg).unwrap();
    }

    async fn mirror(&self, args: &[&str]) -> Output {
        support::mirror_in(self.dir.path(), args).await
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.path(name)).unwrap()).unwrap()
    }
}

/// Checks `doc` against schema/report.v1.json.
fn validate(doc: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/report.v1.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "not valid against schema/report.v1.json:\n{}\n{doc:#}", errors.join("\n"));
}

/// The report entry of the image whose source repository is `repo`
/// (`SRC/repo:1`, or `SRC/repo@…` for a reference pinned by digest).
fn entry<'a>(report: &'a Value, repo: &str) -> &'a Value {
    let (tagged, pinned) = (format!("{SRC}/{repo}:1"), format!("{SRC}/{repo}@"));
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["source"] == tagged.as_str() || i["source"].as_str().unwrap().starts_with(&pinned))
        .unwrap_or_else(|| panic!("{tagged} not in the report: {report:#}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The cases of the issue, each an image of its own: what the gate must find, and a word of
/// the reason an invalid one must give (so that each fails for its own reason, not another's).
const CASES: &[(&str, &str, &str)] = &[
    ("signed/cose", "verified", ""),
    ("signed/jws", "verified", ""),
    ("signed/tampered", "invalid", "is for sha256:0000"),
    ("signed/rogue-ca", "invalid", "does not lead to a certificate"),
    ("signed/expired", "invalid", "not valid at the time"),
    ("signed/expired-timestamped", "verified", ""),
    ("signed/jws-expired-timestamped", "verified", ""),
    ("signed/intruder", "invalid", "not a trusted identity"),
    ("signed/critical", "invalid", "unknown critical header"),
    ("signed/unsigned", "unsigned", ""),
    ("cosign/good", "verified", ""),
    ("cosign/bad", "invalid", "does not verify"),
    ("cosign/referrer", "verified", ""),
    ("free/app", "not covered", ""),
];

/// Pushes one small image per case into `src` and signs it as its case says.
async fn seed(env: &Env, src: &TestRegistry) -> Vec<PushedImage> {
    let mut seeder = Seeder::new(&src.url(), 18);
    let mut pushed = Vec::new();
    for (repo, _, _) in CASES {
        let image = seeder.push_random_image(repo, "1", Format::Oci, &[700]).await;
        let other = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let notary: Option<(&str, Vec<&str>)> = match *repo {
            "signed/cose" => Some((COSE, vec![])),
            "signed/jws" => Some((JWS, vec![])),
            "signed/tampered" => Some((COSE, vec!["--digest", other])),
            "signed/rogue-ca" => Some((COSE, vec!["--cert", "rogue"])),
            "signed/expired" => Some((COSE, vec!["--cert", "expired"])),
            "signed/expired-timestamped" => Some((COSE, vec!["--cert", "expired", "--timestamp"])),
            "signed/jws-expired-timestamped" => Some((JWS, vec!["--cert", "expired", "--timestamp"])),
            "signed/intruder" => Some((JWS, vec!["--cert", "other"])),
            "signed/critical" => Some((COSE, vec!["--critical-extra"])),
            _ => None,
        };
        if let Some((envelope_type, flags)) = notary {
            let format = if envelope_type == COSE { "cose" } else { "jws" };
            let envelope = env.notary(&image, format, &flags);
            seeder.push_notary_signature(repo, &image, envelope_type, envelope).await;
        }
        let cosign_key = match *repo {
            "cosign/good" => Some("cosign"),
            "cosign/bad" => Some("stranger"),
            _ => None,
        };
        if let Some(key) = cosign_key {
            let (payload, sig) = env.cosign(&image, repo, key);
            seeder.push_cosign_signed(repo, &image, payload, &sig).await;
        }
        if *repo == "cosign/referrer" {
            let (payload, sig) = env.cosign(&image, repo, "cosign");
            seeder.push_cosign_referrer(repo, &image, payload, &sig).await;
        }
        pushed.push(image);
    }
    pushed
}

fn references() -> Vec<String> {
    CASES.iter().map(|(repo, _, _)| format!("{SRC}/{repo}:1")).collect()
}

fn notary_repos() -> Vec<&'static str> {
    CASES.iter().map(|(r, _, _)| *r).filter(|r| r.starts_with("signed/")).collect()
}

/// Checks the gate under `enforce` on every case of the issue: `plan` reports each image's
/// outcome (JSON valid against the schema, the table with a SIGNATURE column and the revocation
/// note); `sync` copies the verified and the uncovered images with their signatures, rejects the
/// unsigned and invalid ones with a reason, and exits 3 — the rejected images are not in the
/// target (raw HTTP), the verified ones are, next to their signature referrers and `.sig` tags;
/// the JUnit file fails the rejected cases and the metrics count each outcome. `verify` then
/// finds the signatures in the target (exit 0 for the images that went in), and exits 2 for an
/// image whose signatures were left behind (`--no-referrers`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_copies_only_images_with_a_valid_signature() {
    let (src, dst) = (TestRegistry::anonymous().await, TestRegistry::anonymous().await);
    let env = Env::new();
    let pushed = seed(&env, &src).await;
    env.config(&src, &dst, "enforce", "mirror", &notary_repos(), &references());

    let out = env.mirror(&["plan", "-o", "json", "--report-json", "plan.json"]).await;
    assert_eq!(out.status.code(), Some(2), "drift: {}", stderr(&out));
    let plan = env.json("plan.json");
    validate(&plan);
    // The signer of a cosign signature is the fingerprint of its key, computed here with openssl.
    let der = run("openssl", &["pkey", "-pubin", "-in", env.path("cosign.pub").to_str().unwrap(), "-outform", "DER"]);
    let fingerprint = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der)));
    for (repo, want, why) in CASES {
        let sig = &entry(&plan, repo)["signature"];
        assert_eq!(sig["outcome"], *want, "{repo}: {sig}");
        match *want {
            "verified" if repo.starts_with("cosign/") => assert_eq!(sig["signer"], fingerprint.as_str(), "{repo}"),
            "verified" => assert!(sig["signer"].as_str().unwrap().contains("CN=Signer"), "{repo}: {sig}"),
            "invalid" => assert!(sig["reason"].as_str().unwrap().contains(why), "{repo}: {sig} should say {why:?}"),
            _ => assert!(sig["signer"].is_null() && sig["reason"].is_null(), "{repo}: {sig}"),
        }
    }
    let g = &plan["summary"]["signatures"];
    assert_eq!(
        (g["mode"].as_str(), g["verified"].as_u64(), g["unsigned"].as_u64()),
        (Some("enforce"), Some(6), Some(1))
    );
    assert_eq!((g["invalid"].as_u64(), g["notCovered"].as_u64()), (Some(6), Some(1)));
    assert!(g["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("revocation")), "{g}");
    let table = env.mirror(&["plan"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("SIGNATURE") && text.contains("not covered") && text.contains("note: "), "{text}");

    let out = env
        .mirror(&["sync", "--report-json", "sync.json", "--report-junit", "sync.xml", "--metrics-file", "sync.prom"])
        .await;
    assert_eq!(out.status.code(), Some(3), "rejected images make the run partial: {}", stderr(&out));
    let sync = env.json("sync.json");
    validate(&sync);
    let junit = std::fs::read_to_string(env.path("sync.xml")).unwrap();
    for ((repo, want, _), image) in CASES.iter().zip(&pushed) {
        let e = entry(&sync, repo);
        let in_target = images::manifest_digest(&dst.url(), &format!("mirror/{repo}"), "1", None).await;
        if matches!(*want, "verified" | "not covered") {
            assert_eq!(e["outcome"], "copied", "{repo}: {e}");
            assert_eq!(in_target.as_ref(), Some(&image.digest), "{repo} is in the target");
        } else {
            assert_eq!(
                (e["outcome"].as_str(), e["errorKind"].as_str()),
                (Some("rejected"), Some("signature")),
                "{repo}: {e}"
            );
            assert!(e["error"].as_str().unwrap().contains(if *want == "unsigned" {
                "no signature"
            } else {
                "invalid"
            }));
            assert_eq!(in_target, None, "{repo} was rejected: it must not be in the target");
            assert!(!images::blob_exists(&dst.url(), &format!("mirror/{repo}"), &image.blobs[1].0, None).await);
        }
    }
    assert_eq!(sync["summary"]["outcomes"]["rejected"].as_u64(), Some(7));
    assert_eq!(junit.matches("<failure type=\"rejected\"").count(), 7, "{junit}");
    let prom = std::fs::read_to_string(env.path("sync.prom")).unwrap();
    assert!(prom.contains("outcome=\"rejected\"} 7"), "{prom}");
    assert!(prom.contains("signature=\"verified\"} 6") && prom.contains("signature=\"not covered\"} 1"), "{prom}");
    // The signatures travelled with the images: the referrers index and the cosign tag.
    let cose = &pushed[0];
    let referrers_tag = format!("sha256-{}", cose.digest.hex());
    assert!(images::manifest_digest(&dst.url(), "mirror/signed/cose", &referrers_tag, None).await.is_some());
    let cosign_tag = format!("sha256-{}.sig", pushed[10].digest.hex());
    assert!(images::manifest_digest(&dst.url(), "mirror/cosign/good", &cosign_tag, None).await.is_some());

    // verify: the images that went in carry valid signatures in the target.
    let went_in: Vec<String> = CASES
        .iter()
        .filter(|(_, w, _)| matches!(*w, "verified" | "not covered"))
        .map(|(r, _, _)| format!("{SRC}/{r}:1"))
        .collect();
    env.config(&src, &dst, "enforce", "mirror", &notary_repos(), &went_in);
    let out = env.mirror(&["verify", "--report-json", "verify.json", "--report-junit", "verify.xml"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let verify = env.json("verify.json");
    validate(&verify);
    assert_eq!(verify["summary"]["signatures"]["verified"].as_u64(), Some(6), "{verify:#}");

    // An image copied without its signatures (audit lets it in): verify under enforce finds it
    // unsigned in the target, though the source has a valid signature.
    let one = vec![format!("{SRC}/signed/cose:1")];
    env.config(&src, &dst, "audit", "bare", &notary_repos(), &one);
    let out = env.mirror(&["sync", "--no-referrers"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.config(&src, &dst, "enforce", "bare", &notary_repos(), &one);
    let out =
        env.mirror(&["verify", "--no-referrers", "--report-json", "bare.json", "--report-junit", "bare.xml"]).await;
    assert_eq!(out.status.code(), Some(2), "no signature in the target is drift under enforce: {}", stderr(&out));
    let bare = env.json("bare.json");
    assert_eq!(entry(&bare, "signed/cose")["signature"]["outcome"], "unsigned", "{bare:#}");
    let junit = std::fs::read_to_string(env.path("bare.xml")).unwrap();
    assert!(junit.contains("<failure type=\"signature\""), "{junit}");
}

/// Checks `audit`: every image is copied whatever its signature, the report still says what
/// each signature proved, and the exit code is as without the gate (0). One image is named by
/// digest, so the plan has no `HEAD` answer to take its descriptor from: the gate reads the
/// manifest for it, and the signature still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_copies_everything_and_reports_the_outcomes() {
    let (src, dst) = (TestRegistry::anonymous().await, TestRegistry::anonymous().await);
    let env = Env::new();
    let mut seeder = Seeder::new(&src.url(), 19);
    let good = seeder.push_random_image("signed/cose", "1", Format::Oci, &[300]).await;
    let envelope = env.notary(&good, "cose", &[]);
    seeder.push_notary_signature("signed/cose", &good, COSE, envelope).await;
    let bad = seeder.push_random_image("signed/critical", "1", Format::Oci, &[300]).await;
    let envelope = env.notary(&bad, "jws", &["--critical-extra"]);
    seeder.push_notary_signature("signed/critical", &bad, JWS, envelope).await;
    seeder.push_random_image("signed/unsigned", "1", Format::Oci, &[300]).await;
    let pinned = seeder.push_random_image("signed/pinned", "1", Format::Oci, &[300]).await;
    let envelope = env.notary(&pinned, "jws", &[]);
    seeder.push_notary_signature("signed/pinned", &pinned, JWS, envelope).await;
    let repos = ["signed/cose", "signed/critical", "signed/unsigned"];
    let mut refs: Vec<String> = repos.iter().map(|r| format!("{SRC}/{r}:1")).collect();
    refs.push(pinned.by_digest(SRC));
    env.config(
        &src,
        &dst,
        "audit",
        "mirror",
        &["signed/cose", "signed/critical", "signed/unsigned", "signed/pinned"],
        &refs,
    );

    let out = env.mirror(&["sync", "--report-json", "sync.json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sync = env.json("sync.json");
    validate(&sync);
    for (repo, want) in repos.iter().zip(["verified", "invalid", "unsigned"]) {
        let e = entry(&sync, repo);
        assert_eq!((e["outcome"].as_str(), e["signature"]["outcome"].as_str()), (Some("copied"), Some(want)), "{e}");
        assert!(images::manifest_digest(&dst.url(), &format!("mirror/{repo}"), "1", None).await.is_some());
    }
    assert_eq!(sync["summary"]["signatures"]["mode"], "audit");
    let e = entry(&sync, "signed/pinned");
    assert_eq!((e["outcome"].as_str(), e["signature"]["outcome"].as_str()), (Some("copied"), Some("verified")), "{e}");
    let copied = images::manifest_digest(&dst.url(), "mirror/signed/pinned", pinned.digest.as_str(), None).await;
    assert_eq!(copied.as_ref(), Some(&pinned.digest));
}

/// Checks that a malformed trust policy, a trust store without certificates and a key file
/// that is not a public key each end the run with exit 1 before anything is read or written:
/// the message names the file, never prints the key, and the target stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_trust_material_ends_the_run_before_anything_is_written() {
    let (src, dst) = (TestRegistry::anonymous().await, TestRegistry::anonymous().await);
    let env = Env::new();
    let mut seeder = Seeder::new(&src.url(), 20);
    seeder.push_random_image("signed/cose", "1", Format::Oci, &[300]).await;
    let refs = vec![format!("{SRC}/signed/cose:1")];

    env.config(&src, &dst, "enforce", "mirror", &["signed/cose"], &refs);
    std::fs::write(env.path("trustpolicy.json"), "{\"version\": \"1.0\", \"trustPolicies\": [").unwrap();
    let out = env.mirror(&["sync", "--report-json", "sync.json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("trustpolicy.json"), "{}", stderr(&out));
    assert_eq!(env.json("sync.json")["status"], "failed");

    env.config(&src, &dst, "enforce", "mirror", &["signed/cose"], &refs);
    std::fs::remove_file(env.path("truststore/x509/ca/test/ca.pem")).unwrap();
    let out = env.mirror(&["plan"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("truststore"), "{}", stderr(&out));

    // A private key where the public key belongs: refused, and not one line of it printed.
    env.config(&src, &dst, "enforce", "mirror", &["signed/cose"], &refs);
    std::fs::copy(env.path("truststore/x509/tsa/test/tsa-root.pem"), env.path("truststore/x509/ca/test/ca.pem"))
        .unwrap();
    let private = std::fs::read_to_string(env.path("cosign.key")).unwrap();
    std::fs::write(env.path("cosign.pub"), &private).unwrap();
    let out = env.mirror(&["sync"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cosign.pub"), "{err}");
    for line in private.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!err.contains(line), "key material in the message: {err}");
    }
    let catalog = support::http_client().get(format!("{}/v2/_catalog", dst.url())).send().await.unwrap();
    let catalog: Value = catalog.json().await.unwrap();
    assert_eq!(catalog["repositories"], json!([]), "nothing was written to the target");
}

/// Checks warm mode under `enforce`: the source's signature is checked before anything is read
/// through the cache, so the unsigned image is `rejected` and the cache never fetches its
/// layer, while the signed one is warmed (its blobs end up on the cache's disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_checks_the_source_signature_before_reading_through_the_cache() {
    let src = TestRegistry::anonymous().await;
    let cache = TestRegistry::proxy_cache(&src.url()).await;
    let env = Env::new();
    let mut seeder = Seeder::new(&src.url(), 21);
    let good = seeder.push_random_image("signed/cose", "1", Format::Oci, &[400]).await;
    let envelope = env.notary(&good, "cose", &[]);
    seeder.push_notary_signature("signed/cose", &good, COSE, envelope).await;
    let unsigned = seeder.push_random_image("signed/unsigned", "1", Format::Oci, &[400]).await;
    let repos = ["signed/cose", "signed/unsigned"];
    let refs: Vec<String> = repos.iter().map(|r| format!("{SRC}/{r}:1")).collect();
    env.config_mapping(&src, &cache, "enforce", "target: \"\"\n    mode: warm", &repos, &refs);

    let out = env.mirror(&["sync", "--report-json", "warm.json"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = env.json("warm.json");
    validate(&report);
    assert_eq!(entry(&report, "signed/cose")["outcome"], "warmed", "{report:#}");
    assert_eq!(entry(&report, "signed/unsigned")["outcome"], "rejected", "{report:#}");
    let blobs: Vec<_> = good.blobs.iter().map(|(d, _)| d).collect();
    cache.wait_for_blobs_on_disk(&blobs).await;
    assert!(
        !cache.has_blob_on_disk(&unsigned.blobs[1].0),
        "the rejected image's layer was never read through the cache"
    );
}

/// Checks the Referrers API path and locks the gate's cost (issue #18: at most one request per
/// image beyond the referrers listing the copy makes anyway): behind a proxy that answers the
/// OCI 1.1 referrers API, a signed and an unsigned image are synced once with `mode: off` and
/// once with `mode: audit` (into two fresh targets, so that no blob is mounted instead of read),
/// with a cosign-signed image (cosign's tag form, pinned by digest) beside them. The gate finds
/// the COSE signature through the API and hands its referrers listing and the manifests it read
/// (the Notary signature's by digest, cosign's by its tag, the pinned image's) to the copy, so
/// `audit` asks the source exactly one request more per signed image than `off`: its envelope
/// or payload blob, read once by the gate and once by the copy. Each subject's referrers
/// listing, the Notary signature manifest, cosign's tag and the pinned manifest are asked for
/// once in both runs; the unsigned image costs nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_referrers_api_is_used_and_the_cost_is_locked() {
    let upstream = TestRegistry::anonymous().await;
    let src = support::ReferrersProxy::start(&upstream.url()).await;
    let env = Env::new();
    let mut seeder = Seeder::new(&src.url(), 22);
    let signed = seeder.push_random_image("signed/cose", "1", Format::Oci, &[300]).await;
    let envelope = env.notary(&signed, "cose", &[]);
    let sig = seeder.push_notary_signature("signed/cose", &signed, COSE, envelope).await;
    seeder.push_random_image("signed/unsigned", "1", Format::Oci, &[300]).await;
    let cosigned = seeder.push_random_image("cosign/good", "1", Format::Oci, &[300]).await;
    let (payload, signature) = env.cosign(&cosigned, "cosign/good", "cosign");
    seeder.push_cosign_signed("cosign/good", &cosigned, payload, &signature).await;
    assert_eq!(src.referrers("signed/cose", &signed.digest).len(), 1, "the proxy lists the signature");
    let notary_repos = ["signed/cose", "signed/unsigned"];
    // The cosign-signed image is pinned by digest: the gate reads its manifest for the
    // descriptor a signature names, and hands that to the copy too.
    let mut refs: Vec<String> = ["signed/cose", "signed/unsigned"].iter().map(|r| format!("{SRC}/{r}:1")).collect();
    refs.push(format!("{SRC}/cosign/good@{}", cosigned.digest));

    let mut counts = Vec::new();
    for mode in ["off", "audit"] {
        let dst = TestRegistry::anonymous().await;
        // The proxy stands in for the source registry: the config points SRC at it.
        env.config_urls(&src.url(), &dst.url(), mode, "target: mirror\n    mode: copy", &notary_repos, &refs);
        let before = src.requests().len();
        let out = env.mirror(&["sync", "--report-json", &format!("{mode}.json")]).await;
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", stderr(&out));
        let seen: Vec<(String, String)> = src.requests()[before..].to_vec();
        counts.push(seen);
    }
    let audit = env.json("audit.json");
    assert_eq!(entry(&audit, "signed/cose")["signature"]["outcome"], "verified", "{audit:#}");
    assert_eq!(entry(&audit, "signed/unsigned")["signature"]["outcome"], "unsigned", "{audit:#}");
    assert_eq!(entry(&audit, "cosign/good")["signature"]["outcome"], "verified", "{audit:#}");
    let envelope_reads = |seen: &[(String, String)]| {
        let blob = format!("/blobs/{}", sig.blobs[1].0);
        seen.iter().filter(|(m, p)| m == "GET" && p.contains(&blob)).count()
    };
    let count =
        |seen: &[(String, String)], path: &str| seen.iter().filter(|(m, p)| m == "GET" && p.contains(path)).count();
    let (off, on) = (&counts[0], &counts[1]);
    assert_eq!(envelope_reads(off), 1, "off: the copy reads the envelope once, to copy it: {off:?}");
    assert_eq!(envelope_reads(on), 2, "audit: the gate reads it once more: {on:?}");
    for seen in [off, on] {
        // Each image's, and the Notary signature's own (a referrer's referrers go along too).
        assert_eq!(count(seen, "/referrers/"), 4, "one referrers listing per subject: {seen:#?}");
        let manifest = format!("/manifests/{}", sig.digest);
        assert_eq!(count(seen, &manifest), 1, "the Notary signature manifest is read once: {seen:#?}");
        let cosign_tag = format!("/manifests/sha256-{}.sig", cosigned.digest.hex());
        assert_eq!(count(seen, &cosign_tag), 1, "cosign's signature tag is read once: {seen:#?}");
        let pinned = format!("/manifests/{}", cosigned.digest);
        assert_eq!(count(seen, &pinned), 1, "the pinned image's manifest is read once: {seen:#?}");
    }
    let cosign_blobs = |seen: &[(String, String)]| count(seen, "/cosign/good/blobs/");
    assert_eq!(cosign_blobs(on) - cosign_blobs(off), 1, "audit: the gate reads cosign's payload: {on:#?}");
    assert_eq!(on.len() - off.len(), 2, "the gate's requests: off {off:#?}\naudit {on:#?}");
}
