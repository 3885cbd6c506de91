//! Test support for the Azure pieces: a stand-in Entra, our ACR token-service stand-in, an https
//! listener, and Azurite. Kept apart from `tests/support/` (the registry test support).
#![allow(dead_code)]

pub mod acr_api;
pub mod acr_standin;
pub mod azurite;
pub mod entra;
pub mod tls;

/// A reqwest client for talking to the stand-ins and Azurite: no proxy from the environment, so
/// a developer's `HTTPS_PROXY`/`HTTP_PROXY` never sends a loopback request elsewhere.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("build reqwest client")
}
