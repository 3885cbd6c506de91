//! Tag rules: an `images:` entry that names a repository and a rule instead of one tag (what
//! regsync and `skopeo sync` users write), resolved against the source's tag list when the
//! plan is made.
//!
//! A rule's conditions all hold at once: `all` (every tag), `allow` (a tag must match one of
//! the regular expressions), `deny` (a tag matching any is left out), `semver` (a range; tags
//! that are not versions never match it, and a leading `v` is allowed, as in `v1.11.2`), then
//! `latest: N` keeps the N highest versions of what is left. Every chosen tag carries the reason
//! it was chosen, shown by `resolve` and `plan`.

use crate::config::TagRule;

/// A rule that cannot be used. Names the entry and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("images[{index}] (line {line}): {message}")]
pub struct TagRuleError {
    pub index: usize,
    pub line: u64,
    pub message: String,
}

/// A checked, compiled rule.
#[derive(Debug, Clone)]
pub struct TagMatcher {
    allow: Vec<regex::Regex>,
    deny: Vec<regex::Regex>,
    semver: Option<semver::VersionReq>,
    latest: Option<usize>,
    /// The rule as written, for reasons.
    text: String,
}

impl TagMatcher {
    /// Compiles `rule`; `bad` names the entry in errors.
    pub fn new(rule: &TagRule) -> Result<TagMatcher, String> {
        let re = |p: &String| {
            regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| format!("bad regular expression {p:?}: {e}"))
        };
        let allow = rule.allow.iter().map(re).collect::<Result<Vec<_>, _>>()?;
        let deny = rule.deny.iter().map(re).collect::<Result<Vec<_>, _>>()?;
        let semver = match &rule.semver {
            Some(r) => Some(semver::VersionReq::parse(r).map_err(|e| format!("bad semver range {r:?}: {e}"))?),
            None => None,
        };
        if rule.latest == Some(0) {
            return Err("tags.latest must be at least 1".into());
        }
        let choosing = !allow.is_empty() || semver.is_some() || rule.latest.is_some();
        if rule.all == choosing {
            return Err(if rule.all {
                "tags.all takes every tag: it cannot be combined with allow, semver or latest (deny is fine)".into()
            } else {
                "tags needs one of all, allow, semver or latest".into()
            });
        }
        let mut parts = Vec::new();
        if rule.all {
            parts.push("all".to_string());
        }
        if !rule.allow.is_empty() {
            parts.push(format!("allow {}", rule.allow.join(" | ")));
        }
        if !rule.deny.is_empty() {
            parts.push(format!("deny {}", rule.deny.join(" | ")));
        }
        if let Some(s) = &rule.semver {
            parts.push(format!("semver {s}"));
        }
        if let Some(n) = rule.latest {
            parts.push(format!("latest {n}"));
        }
        Ok(TagMatcher { allow, deny, semver, latest: rule.latest, text: parts.join(", ") })
    }

    /// The rule as written (`semver >=1.11, latest 3`).
    pub fn describe(&self) -> &str {
        &self.text
    }

    /// The tags of `tags` the rule chooses, each with why, highest version first when the rule
    /// orders by version, else in name order.
    pub fn select(&self, tags: &[String]) -> Vec<(String, String)> {
        let mut kept: Vec<(&String, Option<semver::Version>)> = tags
            .iter()
            .filter(|t| self.allow.is_empty() || self.allow.iter().any(|r| r.is_match(t)))
            .filter(|t| !self.deny.iter().any(|r| r.is_match(t)))
            .map(|t| (t, version(t)))
            .filter(|(_, v)| match (&self.semver, v) {
                (Some(req), Some(v)) => req.matches(v),
                (Some(_), None) => false,
                (None, _) => true,
            })
            .collect();
        match self.latest {
            Some(n) => {
                kept.retain(|(_, v)| v.is_some());
                kept.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
                kept.truncate(n);
                let total = kept.len();
                kept.into_iter()
                    .enumerate()
                    .map(|(i, (t, _))| (t.clone(), format!("{}: version {} of the {total} newest", self.text, i + 1)))
                    .collect()
            }
            None => {
                kept.sort_by(|a, b| a.0.cmp(b.0));
                kept.into_iter().map(|(t, _)| (t.clone(), format!("{}: matched", self.text))).collect()
            }
        }
    }
}

/// A tag read as a semantic version: `1.2.3`, `v1.2.3`, `v1.2.3-rc.1`. Tags like `1.2`, `latest`
/// or `v1.2.3-linux-amd64-x` (not valid semver) are not versions.
fn version(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> TagMatcher {
        TagMatcher::new(&serde_saphyr::from_str::<TagRule>(yaml).unwrap()).unwrap()
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    // Checks each condition and their combination on the ingress-nginx controller's tag shapes:
    // latest N by semver within a range, prereleases, non-version tags, allow and deny.
    #[test]
    fn conditions_combine() {
        let t = tags(&["v1.10.6", "v1.11.1", "v1.11.2", "v1.11.3", "v1.12.0-beta.0", "v1.12.0", "latest", "v1.9"]);
        let names = |m: &TagMatcher| m.select(&t).into_iter().map(|(t, _)| t).collect::<Vec<_>>();
        assert_eq!(names(&rule("semver: '>=1.11.0, <1.12.0'\nlatest: 2\n")), ["v1.11.3", "v1.11.2"]);
        assert_eq!(names(&rule("latest: 1\n")), ["v1.12.0"]);
        assert_eq!(names(&rule("allow: ['v1\\.11\\..*']\n")), ["v1.11.1", "v1.11.2", "v1.11.3"]);
        assert_eq!(names(&rule("all: true\ndeny: ['.*-beta.*', 'v1\\.1[01]\\..*']\n")), ["latest", "v1.12.0", "v1.9"]);
        assert_eq!(names(&rule("semver: '^1.12.0-beta.0'\n")), ["v1.12.0", "v1.12.0-beta.0"]);
        let why = rule("semver: '~1.11'\nlatest: 3\n").select(&t);
        assert_eq!(why[0], ("v1.11.3".to_string(), "semver ~1.11, latest 3: version 1 of the 3 newest".to_string()));
    }

    // Checks the refusals: no condition, `all` with another chooser, bad regex, bad range, latest 0.
    #[test]
    fn refusals() {
        let err = |y: &str| TagMatcher::new(&serde_saphyr::from_str::<TagRule>(y).unwrap()).unwrap_err();
        assert!(err("deny: [x]\n").contains("needs one of"));
        assert!(err("all: true\nlatest: 2\n").contains("cannot be combined"));
        assert!(err("allow: ['(']\n").contains("regular expression"));
        assert!(err("semver: 'one'\n").contains("semver range"));
        assert!(err("latest: 0\n").contains("at least 1"));
    }
}
