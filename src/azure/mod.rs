//! Azure pieces that stand beside the registry client: Entra ID sign-in to ACR (an Entra token
//! exchanged for an ACR refresh token, renewed before it expires) and the nightly job's run
//! records and single-run lock in Blob Storage.
//!
//! Dependencies point one way: this module uses the registry client and the config, never the
//! other way round. The registry defines the traits it needs (`registry::auth::EntraSignIn`,
//! `registry::auth::RefreshTokenSource`) and [`EntraSignIn`] implements them; a caller plugs it in
//! with `Registries::with_entra`. The registry's token layer then calls
//! [`identity::AzureTokenSource::refresh_token`] whenever it needs an ACR access token
//! (`grant_type=refresh_token` at the realm) and [`identity::AzureTokenSource::invalidate`] after
//! a 401, and only for a realm on the registry's own host.

pub mod identity;
pub mod storage;

pub use identity::EntraSignIn;
/// The sign-in pieces the integration tests drive one by one (against the stand-in Entra and
/// the ACR token-exchange stand-in); inside the crate they are reached through `identity`.
#[cfg(feature = "internals")]
pub use identity::{
    ACR_SCOPE, AcrRefreshToken, AzureAuthError, AzureTokenSource, CredentialKind, EntraCredential, SignIn,
    build_credential, exchange_for_refresh_token, exchange_url_from_realm,
};
pub use storage::{BlobLocation, LockHeld, RunLock, StorageError, upload_run_records};

/// Replaces the value of every `sig=` query parameter (a SAS signature) in `text` with
/// `REDACTED`, so a blob URL can appear in an error message or a log line without the secret.
pub(crate) fn redact_sas(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("sig=") {
        let boundary = pos == 0 || matches!(rest.as_bytes()[pos - 1], b'?' | b'&');
        out.push_str(&rest[..pos + 4]);
        rest = &rest[pos + 4..];
        if boundary {
            let end = rest.find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace()).unwrap_or(rest.len());
            out.push_str("REDACTED");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_sas;

    #[test]
    fn sas_signatures_are_redacted_and_the_rest_kept() {
        // Checks that the signature goes and the parameters around it stay readable.
        let s = redact_sas("PUT http://h/a/b?sv=2024&sig=abc%2Bdef&sp=rw failed; x?sig=zz");
        assert_eq!(s, "PUT http://h/a/b?sv=2024&sig=REDACTED&sp=rw failed; x?sig=REDACTED");
        assert_eq!(redact_sas("design=1"), "design=1");
    }
}
