//! Test support for the Azure pieces: a stand-in Entra, our ACR token-service stand-in, an https
//! listener, and Azurite. Kept apart from `tests/support/` (the registry test support).
#![allow(dead_code)]

pub mod acr_api;
pub mod acr_standin;
pub mod azurite;
pub mod entra;
pub mod tls;
