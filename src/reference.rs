//! Image references, normalised the way Docker normalises them.
//!
//! `nginx` means `docker.io/library/nginx:latest`; a first path component with a `.` or
//! a `:` in it, or `localhost`, is a registry host; a reference may carry a tag, a digest
//! or both (`name:tag@sha256:…`, where the digest is what gets pulled and the tag is kept
//! for the target). Anything the distribution grammar does not allow is refused rather
//! than guessed at, because a reference we "fix" silently would be pulled from somewhere
//! the user did not mean.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The host Docker uses for references without one.
pub const DOCKER_HUB: &str = "docker.io";

/// Why a reference did not parse. The message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

/// A fully qualified image reference: registry host, repository path, and a tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host as users write it (`mcr.microsoft.com`, `localhost:5000`); `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path inside the registry (`oss/kubernetes/pause`, `library/nginx`).
    pub repository: String,
    /// Tag, when one was given (or `latest` when neither tag nor digest was).
    pub tag: Option<String>,
    /// Digest, when one was given. It wins over the tag when pulling.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference. `latest` is filled in only when neither a tag nor a digest is given.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let err = |reason: &str| ReferenceError { input: input.to_string(), reason: reason.to_string() };
        if input.is_empty() {
            return Err(err("empty reference"));
        }
        if input.len() > 4096 {
            return Err(err("longer than 4096 characters"));
        }
        if input.chars().any(|c| c.is_whitespace()) {
            return Err(err("contains white space"));
        }

        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest = Digest::parse(d).map_err(|e| err(&format!("bad digest: {e}")))?;
                (rest, Some(digest))
            }
            None => (input, None),
        };

        // A tag is what follows the last ':' after the last '/'; a ':' before that is a port.
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|s| colon > s) => (&rest[..colon], Some(&rest[colon + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|r| err(&r))?;
        }
        if name.is_empty() {
            return Err(err("missing repository name"));
        }

        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if first_has_uppercase_host(&registry) {
            return Err(err("registry host must be lowercase"));
        }
        validate_host(&registry).map_err(|r| err(&r))?;
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        validate_repository(&repository).map_err(|r| err(&r))?;
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };

        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub fn selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository at another tag or digest.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { digest: Some(digest), ..self.clone() }
    }
}

/// An image string as written, without its tag or digest (`repo/name:tag@sha256:…` → `repo/name`).
/// A `:` before the last `/` is a port, not a tag.
pub fn without_tag_or_digest(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(c) if no_digest.rfind('/').is_none_or(|s| c > s) => &no_digest[..c],
        _ => no_digest,
    }
}

fn first_has_uppercase_host(host: &str) -> bool {
    host.chars().any(|c| c.is_ascii_uppercase())
}

fn validate_host(host: &str) -> Result<(), String> {
    // An IPv6 literal in brackets, with or without a port: `[::1]`, `[fd00::1]:5000`.
    let (name, port) = match host.strip_prefix('[').and_then(|h| h.split_once(']')) {
        Some((addr, rest)) => {
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("bad IPv6 address {addr:?} in registry host"));
            }
            match rest {
                "" => (host, None),
                _ => (host, Some(rest.strip_prefix(':').ok_or_else(|| format!("bad registry host {host:?}"))?)),
            }
        }
        None => match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        },
    };
    if let Some(p) = port
        && (p.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(format!("bad port {p:?} in registry host"));
    }
    if name.starts_with('[') {
        return Ok(());
    }
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.split('.').all(ok_label) {
        return Err(format!("bad registry host {host:?}"));
    }
    Ok(())
}

fn validate_repository(repo: &str) -> Result<(), String> {
    if repo.len() > 255 {
        return Err("repository name longer than 255 characters".into());
    }
    for component in repo.split('/') {
        if !valid_path_component(component) {
            return Err(format!(
                "bad repository path component {component:?} (lowercase letters, digits and single . _ __ - separators)"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` from the distribution reference grammar.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|x| x == '-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn validate_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    match chars.next() {
        Some(c) if word(c) => {}
        _ => return Err(format!("bad tag {tag:?} (must start with a letter, digit or _)")),
    }
    if tag.len() > 128 {
        return Err(format!("tag {tag:?} longer than 128 characters"));
    }
    if !chars.all(|c| word(c) || c == '.' || c == '-') {
        return Err(format!("bad tag {tag:?} (letters, digits, _ . - only)"));
    }
    Ok(())
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(p("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(p("bitnami/redis:7"), "docker.io/bitnami/redis:7");
        assert_eq!(p("index.docker.io/library/nginx:1"), "docker.io/library/nginx:1");
        assert_eq!(p("localhost/foo"), "localhost/foo:latest");
        assert_eq!(p("localhost:5000/a/b:c"), "localhost:5000/a/b:c");
        assert_eq!(p("127.0.0.1:5101/oss/pause:3.9"), "127.0.0.1:5101/oss/pause:3.9");
        assert_eq!(p("[::1]:5000/tools/x:3"), "[::1]:5000/tools/x:3");
        assert_eq!(p("[fd00::a:1]/x"), "[fd00::a:1]/x:latest");
        assert_eq!(p("mcr.microsoft.com/oss/kubernetes/pause:3.6"), "mcr.microsoft.com/oss/kubernetes/pause:3.6");
    }

    #[test]
    fn tag_and_digest_are_both_kept() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("registry.k8s.io/ingress-nginx/controller:v1.11.2@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1.11.2"));
        assert_eq!(r.digest.as_ref().unwrap().to_string(), d);
        assert_eq!(r.selector(), d);
        let r = Reference::parse(&format!("quay.io/argoproj/argocd@{d}")).unwrap();
        assert_eq!(r.tag, None, "a digest-only reference must not gain a latest tag");
    }

    #[test]
    fn refuses_invalid_forms() {
        for bad in [
            "",
            "Nginx",
            "docker.io/Library/nginx",
            "nginx:",
            "nginx:-bad",
            "nginx@sha256:abc",
            "a//b",
            "a/b/",
            "host:notaport/x",
            "nginx:tag with space",
            "-a/b",
            "a..b/c",
            "[zz::1]:5000/x",
            "[::1]x/y",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let e = Reference::parse("quay.io/Foo/bar").unwrap_err();
        assert!(e.to_string().contains("lowercase"), "{e}");
    }

    #[test]
    fn path_components_follow_the_grammar() {
        assert!(valid_path_component("a__b"));
        assert!(valid_path_component("a---b"));
        assert!(valid_path_component("a.b_c"));
        assert!(!valid_path_component("a___b"));
        assert!(!valid_path_component("a._b"));
        assert!(!valid_path_component("_a"));
    }
}
