//! Where each source image goes in the target registry, and how it gets there.
//!
//! Rules are tried in order and the first whose `source` matches wins, so a specific rule
//! written before `*` overrides it. A `source` is matched against `registry/repository`:
//! - `*` matches everything; the rest of the path is the whole repository, so `{registry}` in
//!   the target is how the host is kept (`mirror/{registry}`);
//! - `host` or `host/path` matches that repository and everything below it;
//! - `host/path/*` matches everything below `host/path`.
//!
//! The target repository is `target` (with `{registry}` replaced by the source host, its `:`
//! written as `_` since a repository path cannot hold one) followed by the part of the source
//! path the rule did not name; tag and digest are kept. So with
//! `{source: mcr.microsoft.com, target: aks-managed-repository}`, `mcr.microsoft.com/oss/x:tag`
//! becomes `<target host>/aks-managed-repository/oss/x:tag`, exactly the path a network isolated
//! node asks the registry for (the containerd `hosts.toml` AgentBaker writes for network isolated
//! clusters).

use crate::config::{Mapping, MappingMode};
use crate::reference::Reference;

/// The ACR repository prefix AKS nodes use for `mcr.microsoft.com` in network isolated mode.
pub const AKS_MANAGED_PREFIX: &str = "aks-managed-repository";

/// A mapping that cannot be applied. Names the rule or the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("config has no `target:` registry to map images into")]
    NoTarget,
    #[error("target {0:?} is not a registry host (write e.g. myacr.azurecr.io)")]
    BadTarget(String),
    #[error("mappings[{index}] source {pattern:?}: {reason}")]
    BadSource { index: usize, pattern: String, reason: String },
    #[error("no mapping matches {image}: add a rule for it or a final `source: \"*\"` rule")]
    NoMatch { image: String },
    #[error("mappings[{index}] maps {image} to an invalid reference: {reason}")]
    BadResult { index: usize, image: String, reason: String },
}

/// The rules used when the config has none: MCR through the AKS cache rule, the rest copied
/// under `mirror/<source host>/`.
pub fn default_mappings() -> Vec<Mapping> {
    vec![
        Mapping { source: "mcr.microsoft.com".into(), target: AKS_MANAGED_PREFIX.into(), mode: MappingMode::Warm },
        Mapping { source: "*".into(), target: "mirror/{registry}".into(), mode: MappingMode::Copy },
    ]
}

/// Compiled rules for one target registry.
#[derive(Debug, Clone)]
pub struct Mapper {
    target: String,
    rules: Vec<Mapping>,
}

impl Mapper {
    /// Checks the target host and every rule's source pattern once.
    pub fn new(target: Option<&str>, rules: &[Mapping]) -> Result<Mapper, MappingError> {
        let target = target.ok_or(MappingError::NoTarget)?.trim_end_matches('/').to_string();
        if Reference::parse(&format!("{target}/x:y")).map(|r| r.registry != target).unwrap_or(true)
            || target.contains('/')
        {
            return Err(MappingError::BadTarget(target));
        }
        let rules = if rules.is_empty() { default_mappings() } else { rules.to_vec() };
        for (index, r) in rules.iter().enumerate() {
            let s = r.source.as_str();
            let bad = |reason: &str| MappingError::BadSource { index, pattern: s.into(), reason: reason.into() };
            if s == "*" {
                continue;
            }
            let body = s.strip_suffix("/*").unwrap_or(s);
            if body.contains('*') {
                return Err(bad("`*` may only stand alone or as the last path component (`host/path/*`)"));
            }
            if body.is_empty() || body.ends_with('/') || body.contains("//") {
                return Err(bad("expected a host, host/path or host/path/*"));
            }
            if body.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(bad("must be lowercase"));
            }
        }
        Ok(Mapper { target, rules })
    }

    /// The target registry host.
    pub fn target_host(&self) -> &str {
        &self.target
    }

    /// The target reference and mode for a source, and the index of the rule used.
    pub fn map(&self, source: &Reference) -> Result<(Reference, MappingMode, usize), MappingError> {
        let full = source.name();
        for (index, r) in self.rules.iter().enumerate() {
            let rest: Option<String> = if r.source == "*" {
                Some(source.repository.clone())
            } else {
                let body = r.source.strip_suffix("/*").unwrap_or(&r.source);
                let under = full.strip_prefix(body).and_then(|x| x.strip_prefix('/')).map(str::to_string);
                if r.source.ends_with("/*") {
                    under
                } else if full == body {
                    // The rule names the repository itself: the target prefix is the whole name.
                    Some(String::new())
                } else {
                    under
                }
            };
            let Some(rest) = rest else { continue };
            let prefix = r.target.replace("{registry}", &host_path(&source.registry));
            let prefix = prefix.trim_matches('/');
            let repo = match (prefix.is_empty(), rest.is_empty()) {
                (true, _) => rest,
                (false, true) => prefix.to_string(),
                (false, false) => format!("{prefix}/{rest}"),
            };
            let mut text = format!("{}/{}", self.target, repo);
            if let Some(t) = &source.tag {
                text.push(':');
                text.push_str(t);
            }
            if let Some(d) = &source.digest {
                text.push('@');
                text.push_str(d.as_str());
            }
            let target = Reference::parse(&text).map_err(|e| MappingError::BadResult {
                index,
                image: source.to_string(),
                reason: e.reason,
            })?;
            return Ok((target, r.mode, index));
        }
        Err(MappingError::NoMatch { image: source.to_string() })
    }
}

/// A registry host as a repository path component: a `:port` is written `_port`, and an IPv6
/// literal, which has brackets and colons a repository cannot hold, is written out in full with
/// dashes (`[::1]:5000` → `ipv6-0-0-0-0-0-0-0-1_5000`), so two hosts never share a path.
fn host_path(host: &str) -> String {
    if let Some((addr, rest)) = host.strip_prefix('[').and_then(|h| h.split_once(']'))
        && let Ok(ip) = addr.parse::<std::net::Ipv6Addr>()
    {
        let segments: Vec<String> = ip.segments().iter().map(|s| format!("{s:x}")).collect();
        let port = rest.strip_prefix(':').map(|p| format!("_{p}")).unwrap_or_default();
        return format!("ipv6-{}{port}", segments.join("-"));
    }
    host.replace(':', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(source: &str, target: &str, mode: MappingMode) -> Mapping {
        Mapping { source: source.into(), target: target.into(), mode }
    }

    fn map(mapper: &Mapper, s: &str) -> (String, MappingMode) {
        let (t, mode, _) = mapper.map(&Reference::parse(s).unwrap()).unwrap();
        (t.to_string(), mode)
    }

    // Checks the two examples of the issue, character for character.
    #[test]
    fn issue_examples() {
        let mapper = Mapper::new(Some("myacr.azurecr.io"), &[]).unwrap();
        assert_eq!(
            map(&mapper, "mcr.microsoft.com/oss/x:tag"),
            ("myacr.azurecr.io/aks-managed-repository/oss/x:tag".into(), MappingMode::Warm)
        );
        assert_eq!(
            map(&mapper, "redis:7"),
            ("myacr.azurecr.io/mirror/docker.io/library/redis:7".into(), MappingMode::Copy)
        );
    }

    // Checks first-match-wins, `host/path/*`, exact repositories, ports, and digests kept.
    #[test]
    fn first_match_and_patterns() {
        let d = format!("sha256:{}", "b".repeat(64));
        let mapper = Mapper::new(
            Some("acr.example.io"),
            &[
                m("docker.io/library/*", "hub", MappingMode::Copy),
                m("quay.io/argoproj/argocd", "argo/argocd", MappingMode::Copy),
                m("*", "mirror/{registry}", MappingMode::Copy),
            ],
        )
        .unwrap();
        assert_eq!(map(&mapper, "nginx").0, "acr.example.io/hub/nginx:latest");
        assert_eq!(map(&mapper, "quay.io/argoproj/argocd:v3").0, "acr.example.io/argo/argocd:v3");
        assert_eq!(
            map(&mapper, "quay.io/argoproj/argocd-other:v3").0,
            "acr.example.io/mirror/quay.io/argoproj/argocd-other:v3"
        );
        assert_eq!(map(&mapper, "localhost:5000/a/b:c").0, "acr.example.io/mirror/localhost_5000/a/b:c");
        assert_eq!(map(&mapper, "[::1]:5000/tools/x:3").0, "acr.example.io/mirror/ipv6-0-0-0-0-0-0-0-1_5000/tools/x:3");
        assert_eq!(map(&mapper, "[fd00::a:1]/x:3").0, "acr.example.io/mirror/ipv6-fd00-0-0-0-0-0-a-1/x:3");
        assert_eq!(map(&mapper, &format!("ghcr.io/x/y:1@{d}")).0, format!("acr.example.io/mirror/ghcr.io/x/y:1@{d}"));
    }

    // Checks refusals: no target, a bad pattern, and an image no rule matches.
    #[test]
    fn refusals() {
        assert_eq!(Mapper::new(None, &[]).unwrap_err(), MappingError::NoTarget);
        assert!(matches!(
            Mapper::new(Some("a.io"), &[m("docker.io/*/x", "t", MappingMode::Copy)]),
            Err(MappingError::BadSource { index: 0, .. })
        ));
        let mapper = Mapper::new(Some("a.io"), &[m("mcr.microsoft.com", "x", MappingMode::Warm)]).unwrap();
        let e = mapper.map(&Reference::parse("nginx").unwrap()).unwrap_err();
        assert!(e.to_string().contains("docker.io/library/nginx:latest"), "{e}");
        assert!(Mapper::new(Some("https://a.io/x"), &[]).is_err());
    }
}
