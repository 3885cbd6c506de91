//! Azurite (the Azure Storage emulator, npm package `azurite`, installed by `npm ci` into
//! `node_modules/`) on a free loopback port with a temporary data folder, and an account SAS
//! signed with Azurite's well-known development key.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published development key (not a secret).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const SAS_VERSION: &str = "2021-08-06";

pub struct Azurite {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT/devstoreaccount1`
    pub account_url: String,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn azurite_bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/azurite-blob");
    assert!(p.exists(), "{} is missing: run `npm ci` at the repository root first", p.display());
    p
}

impl Azurite {
    /// Starts Azurite's blob service and waits until it answers (at most ~30 s).
    pub async fn start() -> Azurite {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(azurite_bin())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
            .arg(dir.path())
            // The azure SDK speaks a newer API version than Azurite may know; the operations used are old.
            .args(["--silent", "--skipApiVersionCheck", "--loose", "--disableProductStyleUrl"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start azurite-blob");
        let a = Azurite { child, _dir: dir, account_url: format!("http://127.0.0.1:{port}/{ACCOUNT}") };
        let http = super::http();
        for _ in 0..300 {
            if http.get(format!("{}?comp=list", a.account_url)).send().await.is_ok() {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("azurite did not answer on port {port}");
    }

    /// An account SAS for the blob service: every permission on containers and objects.
    pub fn account_sas(&self) -> String {
        let (permissions, services, resource_types, expiry) = ("rwdlacup", "b", "sco", "2099-01-01T00:00:00Z");
        // String-to-sign for account SAS, version 2020-12-06 and later (ends with the encryption scope line).
        let string_to_sign =
            format!("{ACCOUNT}\n{permissions}\n{services}\n{resource_types}\n\n{expiry}\n\n\n{SAS_VERSION}\n\n");
        let key = base64::engine::general_purpose::STANDARD.decode(ACCOUNT_KEY).unwrap();
        let sig = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, string_to_sign.as_bytes()));
        let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        format!("sv={SAS_VERSION}&ss={services}&srt={resource_types}&sp={permissions}&se={expiry}&sig={sig}")
    }

    /// Creates a container with raw HTTP (the code under test never creates containers).
    pub async fn create_container(&self, name: &str) {
        let r = super::http()
            .put(format!("{}/{name}?restype=container&{}", self.account_url, self.account_sas()))
            .header("x-ms-version", SAS_VERSION)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "create container: {}", r.text().await.unwrap_or_default());
    }

    /// Breaks the lease on a blob at once with raw HTTP, as another client (or an operator
    /// clearing a stuck lock) would: the holder's next renewal fails.
    pub async fn break_lease(&self, container_path: &str) {
        let r = super::http()
            .put(format!("{}/{container_path}?comp=lease&{}", self.account_url, self.account_sas()))
            .header("x-ms-version", SAS_VERSION)
            .header("x-ms-lease-action", "break")
            .header("x-ms-lease-break-period", "0")
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "break lease: {}", r.text().await.unwrap_or_default());
    }

    /// The names of the blobs in `container` below `prefix`, listed with raw HTTP.
    pub async fn blob_names(&self, container: &str, prefix: &str) -> Vec<String> {
        let body = super::http()
            .get(format!(
                "{}/{container}?restype=container&comp=list&prefix={prefix}&{}",
                self.account_url,
                self.account_sas()
            ))
            .header("x-ms-version", SAS_VERSION)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        body.split("<Name>").skip(1).filter_map(|s| s.split("</Name>").next()).map(String::from).collect()
    }

    /// Reads a blob back with raw HTTP: (status, body).
    pub async fn get(&self, container_path: &str) -> (u16, Vec<u8>) {
        let r = super::http()
            .get(format!("{}/{container_path}?{}", self.account_url, self.account_sas()))
            .header("x-ms-version", SAS_VERSION)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

#[test]
fn hmac_matches_rfc4231_case_2() {
    // Checks the hand-rolled HMAC against RFC 4231 test case 2, so a bad SAS is not blamed on Azurite.
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}
