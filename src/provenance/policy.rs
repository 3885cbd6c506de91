//! The Notary Project trust policy document, version "1.0" (specs/trust-store-trust-policy.md):
//! which policy applies to an image (its `registryScopes`), how strictly each validation is
//! applied (`signatureVerification`), which trust stores and which identities are trusted.
//!
//! Everything the specification calls an invalid policy is refused when the file is loaded, with
//! the file and the policy's name in the message, so a broken policy ends the run before
//! anything is read from a registry, not halfway through it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::ProvenanceError;

/// What a verification level does with one kind of validation failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// The failure fails the signature.
    Enforce,
    /// The failure is logged and verification goes on.
    Log,
    /// The validation is not performed (revocation only).
    Skip,
}

/// The specification's verification levels; `Skip` verifies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Level {
    Strict,
    Permissive,
    Audit,
    Skip,
}

/// The action per validation after the level and its `override` (integrity is always enforced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Actions {
    pub authenticity: Action,
    pub authentic_timestamp: Action,
    pub expiry: Action,
    pub revocation: Action,
}

impl Level {
    /// The specification's table: strict enforces everything; permissive enforces integrity and
    /// authenticity and logs the rest; audit enforces integrity only.
    fn actions(self) -> Actions {
        use Action::*;
        let (authenticity, authentic_timestamp, expiry, revocation) = match self {
            Level::Strict => (Enforce, Enforce, Enforce, Enforce),
            Level::Permissive => (Enforce, Log, Log, Log),
            Level::Audit => (Log, Log, Log, Log),
            Level::Skip => (Skip, Skip, Skip, Skip),
        };
        Actions { authenticity, authentic_timestamp, expiry, revocation }
    }
}

/// When a timestamp countersignature is verified (`verifyTimestamp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VerifyTimestamp {
    Always,
    AfterCertExpiry,
}

/// A trust store named by a policy: its type and name (`ca:acme`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct StoreRef {
    pub kind: StoreKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum StoreKind {
    Ca,
    Tsa,
    SigningAuthority,
}

impl StoreKind {
    /// The directory name under `x509/`.
    pub(super) fn dir(self) -> &'static str {
        match self {
            StoreKind::Ca => "ca",
            StoreKind::Tsa => "tsa",
            StoreKind::SigningAuthority => "signingAuthority",
        }
    }
}

/// One trusted identity: `*` or the attributes of an `x509.subject:` distinguished name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Identity {
    Any,
    /// Attribute type (upper case, `S` read as `ST`) → value; the leaf's subject must have
    /// every one of them with an equal value.
    Subject(BTreeMap<String, String>),
}

/// One statement of the trust policy.
#[derive(Debug, Clone)]
pub(super) struct Policy {
    pub name: String,
    pub scopes: Vec<String>,
    pub level: Level,
    pub actions: Actions,
    pub verify_timestamp: VerifyTimestamp,
    pub stores: Vec<StoreRef>,
    pub identities: Vec<Identity>,
}

/// The whole document.
#[derive(Debug, Clone)]
pub(super) struct TrustPolicy {
    pub policies: Vec<Policy>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    version: Option<String>,
    trust_policies: Option<Vec<Statement>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    name: Option<String>,
    registry_scopes: Option<Vec<String>>,
    signature_verification: Option<Verification>,
    #[serde(default)]
    trust_stores: Vec<String>,
    #[serde(default)]
    trusted_identities: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Verification {
    level: Option<String>,
    #[serde(default)]
    r#override: BTreeMap<String, String>,
    verify_timestamp: Option<String>,
}

impl TrustPolicy {
    /// Parses and validates a trust policy document. `path` only names the file in errors.
    pub(super) fn parse(path: &Path, json: &[u8]) -> Result<TrustPolicy, ProvenanceError> {
        let invalid = |message: String| ProvenanceError::Invalid { path: path.to_path_buf(), message };
        let doc: Document =
            serde_json::from_slice(json).map_err(|e| invalid(format!("not a trust policy document: {e}")))?;
        match doc.version.as_deref() {
            Some("1.0") => {}
            Some(v) => return Err(invalid(format!("unsupported trust policy version {v:?} (only \"1.0\" is)"))),
            None => return Err(invalid("the trust policy has no \"version\"".into())),
        }
        let statements = doc.trust_policies.ok_or_else(|| invalid("the trust policy has no \"trustPolicies\"".into()))?;
        if statements.is_empty() {
            return Err(invalid("\"trustPolicies\" is empty".into()));
        }
        let mut names = HashSet::new();
        let mut scopes_seen: BTreeMap<String, String> = BTreeMap::new();
        let mut policies = Vec::new();
        for (i, st) in statements.into_iter().enumerate() {
            let name = st.name.filter(|n| !n.trim().is_empty()).ok_or_else(|| invalid(format!("trust policy #{} has no name", i + 1)))?;
            let bad = |message: String| invalid(format!("trust policy {name:?}: {message}"));
            if !names.insert(name.clone()) {
                return Err(bad("the name is used twice".into()));
            }
            let scopes = st.registry_scopes.unwrap_or_default();
            if scopes.is_empty() {
                return Err(bad("\"registryScopes\" must name at least one repository or \"*\"".into()));
            }
            if scopes.iter().any(|s| s == "*") && scopes.len() > 1 {
                return Err(bad("the global scope \"*\" must be the only scope of its policy".into()));
            }
            for scope in &scopes {
                if scope != "*" {
                    if scope.contains('*') {
                        return Err(bad(format!("scope {scope:?}: a repository scope must not contain \"*\"")));
                    }
                    if !scope.contains('/') || scope.contains('@') || scope.rsplit('/').next().is_some_and(|l| l.contains(':')) {
                        return Err(bad(format!(
                            "scope {scope:?} is not a fully qualified repository (registry/namespace/repository, no tag)"
                        )));
                    }
                }
                if let Some(other) = scopes_seen.insert(scope.clone(), name.clone()) {
                    return Err(bad(format!("scope {scope:?} is also in policy {other:?}: a repository may have one policy")));
                }
            }
            let verification = st.signature_verification.ok_or_else(|| bad("\"signatureVerification\" is missing".into()))?;
            let level = match verification.level.as_deref() {
                Some("strict") => Level::Strict,
                Some("permissive") => Level::Permissive,
                Some("audit") => Level::Audit,
                Some("skip") => Level::Skip,
                Some(other) => return Err(bad(format!("unknown verification level {other:?}"))),
                None => return Err(bad("\"signatureVerification.level\" is missing".into())),
            };
            let mut actions = level.actions();
            if level == Level::Skip && !verification.r#override.is_empty() {
                return Err(bad("the skip level cannot be overridden".into()));
            }
            for (key, value) in &verification.r#override {
                let action = match value.as_str() {
                    "enforce" => Action::Enforce,
                    "log" => Action::Log,
                    "skip" if key == "revocation" => Action::Skip,
                    other => return Err(bad(format!("override {key:?}: unsupported value {other:?}"))),
                };
                match key.as_str() {
                    "authenticity" => actions.authenticity = action,
                    "authenticTimestamp" => actions.authentic_timestamp = action,
                    "expiry" => actions.expiry = action,
                    "revocation" => actions.revocation = action,
                    "integrity" => return Err(bad("integrity cannot be overridden".into())),
                    other => return Err(bad(format!("unknown override {other:?}"))),
                }
            }
            let verify_timestamp = match verification.verify_timestamp.as_deref() {
                None | Some("always") => VerifyTimestamp::Always,
                Some("afterCertExpiry") => VerifyTimestamp::AfterCertExpiry,
                Some(other) => return Err(bad(format!("unknown verifyTimestamp {other:?}"))),
            };
            let mut stores = Vec::new();
            let mut identities = Vec::new();
            if level == Level::Skip {
                if scopes.iter().any(|s| s == "*") {
                    return Err(bad("the skip level cannot be used with the global scope \"*\"".into()));
                }
                if !st.trust_stores.is_empty() || !st.trusted_identities.is_empty() {
                    return Err(bad("a skip policy must not name trust stores or trusted identities".into()));
                }
            } else {
                if st.trust_stores.is_empty() {
                    return Err(bad("\"trustStores\" is empty".into()));
                }
                for s in &st.trust_stores {
                    let (kind, store) = s
                        .split_once(':')
                        .ok_or_else(|| bad(format!("trust store {s:?} is not <type>:<name>")))?;
                    let kind = match kind {
                        "ca" => StoreKind::Ca,
                        "tsa" => StoreKind::Tsa,
                        "signingAuthority" => StoreKind::SigningAuthority,
                        other => return Err(bad(format!("trust store {s:?}: unknown type {other:?}"))),
                    };
                    if store.is_empty() || !store.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) || store.starts_with('.') {
                        return Err(bad(format!("trust store {s:?}: the name must be letters, digits, '-', '_' or '.'")));
                    }
                    stores.push(StoreRef { kind, name: store.to_string() });
                }
                if !stores.iter().any(|s| s.kind != StoreKind::Tsa) {
                    return Err(bad("a tsa store alone cannot verify signatures: name a ca or signingAuthority store".into()));
                }
                if st.trusted_identities.is_empty() {
                    return Err(bad("\"trustedIdentities\" is empty (use [\"*\"] to trust any identity of the stores)".into()));
                }
                if st.trusted_identities.iter().any(|i| i.trim() == "*") {
                    if st.trusted_identities.len() > 1 {
                        return Err(bad("\"*\" must be the only trusted identity when it is used".into()));
                    }
                    identities.push(Identity::Any);
                } else {
                    for raw in &st.trusted_identities {
                        let dn = raw
                            .split_once(':')
                            .filter(|(prefix, _)| prefix.trim() == "x509.subject")
                            .map(|(_, dn)| dn)
                            .ok_or_else(|| bad(format!("trusted identity {raw:?} does not start with \"x509.subject:\"")))?;
                        let attrs = parse_dn(dn).map_err(|e| bad(format!("trusted identity {raw:?}: {e}")))?;
                        for required in ["C", "ST", "O"] {
                            if !attrs.contains_key(required) {
                                return Err(bad(format!("trusted identity {raw:?} must name C, ST (or S) and O")));
                            }
                        }
                        identities.push(Identity::Subject(attrs));
                    }
                    for (i, a) in identities.iter().enumerate() {
                        for b in &identities[i + 1..] {
                            if let (Identity::Subject(a), Identity::Subject(b)) = (a, b)
                                && overlap(a, b)
                            {
                                return Err(bad("trusted identities overlap: one certificate could match two of them".into()));
                            }
                        }
                    }
                }
            }
            policies.push(Policy { name, scopes, level, actions, verify_timestamp, stores, identities });
        }
        Ok(TrustPolicy { policies })
    }

    /// The policy for a repository (`registry/namespace/repository`): the one naming it,
    /// otherwise the global one.
    pub(super) fn for_repository(&self, repository: &str) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|p| p.scopes.iter().any(|s| s == repository))
            .or_else(|| self.policies.iter().find(|p| p.scopes.iter().any(|s| s == "*")))
    }
}

/// Two subject patterns overlap when one certificate could match both: they agree on every
/// attribute type both name.
fn overlap(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().all(|(k, v)| b.get(k).is_none_or(|w| w == v))
}

/// Parses `C=US, ST=WA, O=acme, OU=x` (the specification's escaping: `\,`, `\;`, `\\`, and
/// `\ ` for a leading or trailing space) into attribute type → value. Types are upper-cased;
/// `S` is `ST`. A type named twice or a multi-valued RDN (`+`) is refused.
pub(super) fn parse_dn(dn: &str) -> Result<BTreeMap<String, String>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = dn.chars();
    // Characters escaped with '\' are kept as (char, escaped=true) so trimming spares them.
    let mut part: Vec<(char, bool)> = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => part.push((n, true)),
                None => return Err("ends with a lone '\\'".into()),
            },
            ',' | ';' => parts.push(std::mem::take(&mut part)),
            _ => part.push((c, false)),
        }
    }
    parts.push(part);
    let mut out = BTreeMap::new();
    for part in parts {
        let start = part.iter().position(|&(c, e)| e || !c.is_whitespace()).unwrap_or(part.len());
        let end = part.iter().rposition(|&(c, e)| e || !c.is_whitespace()).map_or(start, |i| i + 1);
        let part = &part[start..end];
        let Some(eq) = part.iter().position(|&(c, e)| c == '=' && !e) else {
            return Err(format!("{:?} is not TYPE=value", part.iter().map(|p| p.0).collect::<String>()));
        };
        if part.iter().any(|&(c, e)| c == '+' && !e) {
            return Err("multi-valued RDNs ('+') are not supported".into());
        }
        cur.clear();
        cur.extend(part[..eq].iter().map(|p| p.0));
        let mut key = cur.trim().to_ascii_uppercase();
        if key == "S" {
            key = "ST".into();
        }
        let value_part = &part[eq + 1..];
        let vstart = value_part.iter().position(|&(c, e)| e || !c.is_whitespace()).unwrap_or(value_part.len());
        let value: String = value_part[vstart..].iter().map(|p| p.0).collect();
        if key.is_empty() || value.is_empty() {
            return Err(format!("{key:?} has an empty type or value"));
        }
        if out.insert(key.clone(), value).is_some() {
            return Err(format!("{key} is named twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the specification's DN escapes (`\,`, `\;`, `\\`, `\ ` keeping an edge space),
    /// `S` read as `ST`, case-insensitive types, and that a repeated type or a multi-valued RDN
    /// is refused.
    #[test]
    fn distinguished_names_parse_with_escapes() {
        let dn = parse_dn(r" C=US, s=WA , O=Acme\, Inc\; Ltd, OU=\ padded\ , CN=a\\b").unwrap();
        let want: BTreeMap<String, String> = [("C", "US"), ("ST", "WA"), ("O", "Acme, Inc; Ltd"), ("OU", " padded "), ("CN", "a\\b")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(dn, want);
        assert!(parse_dn("C=US, C=DE").unwrap_err().contains("named twice"));
        assert!(parse_dn("C=US+O=x").unwrap_err().contains("multi-valued"));
        assert!(parse_dn("C=US, nonsense").is_err());
    }
}
