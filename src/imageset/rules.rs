//! The general rules for images an operator pulls that stand in no pod spec: found by what a
//! name says (a variable, a flag, a ConfigMap or its key says `image`), not by a table of
//! projects, since the next operator a user installs will not be in any table.
//!
//! A value found this way is only a candidate. It is taken when it parses as a reference *and*
//! names a registry host or a `/` path ([`judge`]): operators keep switches and versions under
//! such names too (`SKIP_IMAGE_PULL: "true"`, `FOO_IMAGE_VERSION: v1.2.3`, `…-image: disabled`),
//! and none of those has a `/`. A template (`{{ }}`, `${}`) is a warning here, not an error:
//! operators keep defaults in them.

use crate::reference::{Reference, without_tag_or_digest};

/// What a variable's name says about its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Says {
    /// One image: the name ends in `IMAGE` or has `IMAGE` as a word (`RELATED_IMAGE_AGENT`,
    /// `DRIVER_IMAGE-580`).
    Image,
    /// A list of images, one per item, each maybe after `key=` (Strimzi's
    /// `STRIMZI_KAFKA_IMAGES: "4.2.0=quay.io/strimzi/kafka:…"`): the name ends in `IMAGES` or has
    /// it as a word.
    Images,
}

/// Last words of a variable name that say it holds a part of a reference or a pull setting, not
/// an image (`OPERATOR_IMAGE_REPOSITORY: quay.io/acme/op` would otherwise be taken as
/// `quay.io/acme/op:latest`). OLM's `RELATED_IMAGE_*` names are always whole images.
const PART_WORDS: &[&str] = &["REPO", "REPOSITORY", "REGISTRY", "TAG", "VERSION", "DIGEST", "POLICY", "SECRET", "SECRETS"];

/// Whether an environment variable's name says it holds an image (rule 1).
pub(crate) fn variable_says(name: &str) -> Option<Says> {
    let up = name.to_ascii_uppercase();
    let words: Vec<&str> = up.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    if !up.starts_with("RELATED_IMAGE_") && words.last().is_some_and(|w| PART_WORDS.contains(w)) {
        return None;
    }
    if up.ends_with("IMAGES") || words.contains(&"IMAGES") {
        Some(Says::Images)
    } else if up.ends_with("IMAGE") || words.contains(&"IMAGE") {
        Some(Says::Image)
    } else {
        None
    }
}

/// The name of a flag argument whose name ends in `image` (rule 4), with the value when it is
/// written `--name=VALUE`: `--x-image`, `-x-image`, `--image`. `None` for anything else.
pub(crate) fn image_flag(arg: &str) -> Option<(&str, Option<&str>)> {
    let bare = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    let (name, value) = match bare.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (bare, None),
    };
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.to_ascii_lowercase().ends_with("image");
    ok.then(|| (&arg[..arg.len() - bare.len() + name.len()], value))
}

/// Whether a ConfigMap's name or a key says `image` (rule 3).
pub(crate) fn says_image(name: &str) -> bool {
    name.to_ascii_lowercase().contains("image")
}

/// The items of a list value (`*_IMAGES`): separated by white space, commas or semicolons, each
/// maybe `key=image`; the key, if any, and the image.
pub(crate) fn list_items(value: &str) -> impl Iterator<Item = (Option<&str>, &str)> {
    value
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|s| !s.is_empty())
        .map(|s| s.split_once('=').map_or((None, s), |(k, v)| (Some(k), v)))
}

/// What to do with a candidate value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Take,
    /// Not taken, and the user should hear why (it looks like an image: a template, or a
    /// reference with a tag but neither host nor path, or a broken one with a `/`).
    Warn(String),
    /// Not an image at all (`true`, `disabled`, `v1.2.3`, `text`): nothing to say.
    Ignore,
}

/// The false-positive guard (rule 7). `need_host`: the value must name a registry host (every
/// value of a ConfigMap named for images); else a registry host or a `/` path will do.
pub(crate) fn judge(value: &str, need_host: bool) -> Verdict {
    let value = value.trim();
    if value.is_empty() {
        return Verdict::Ignore;
    }
    if super::workloads::looks_templated(value) {
        return Verdict::Warn(
            "looks like a template (operators keep defaults in them); add the image it stands for under `images:` if the cluster pulls it".into(),
        );
    }
    match Reference::parse(value) {
        Err(e) if value.contains('/') => Verdict::Warn(e.reason),
        Err(_) => Verdict::Ignore,
        Ok(_) => {
            let host = has_host(value);
            if host || (!need_host && value.contains('/')) {
                Verdict::Take
            } else if without_tag_or_digest(value) != value {
                Verdict::Warn(format!(
                    "names no registry {}; add it under `images:` if the cluster pulls it",
                    if need_host { "host" } else { "host or path" }
                ))
            } else {
                Verdict::Ignore
            }
        }
    }
}

/// Whether the first path component of a reference is a registry host (as Docker decides it).
fn has_host(value: &str) -> bool {
    value.split_once('/').is_some_and(|(h, _)| h.contains('.') || h.contains(':') || h == "localhost")
}

/// A ConfigMap value that holds YAML or JSON (a block with lines, or a `{…}`/`[…]` flow): its
/// parsed form, bounded like a manifest. `None` for plain values and ones that do not parse.
pub(crate) fn structured(value: &str) -> Option<serde_json::Value> {
    let t = value.trim_start();
    if !(value.contains('\n') || t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    let v: serde_json::Value =
        serde_saphyr::from_str_with_options(value, super::workloads::yaml_options(value.len())).ok()?;
    (v.is_object() || v.is_array()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Checks the variable names rule 1 takes and leaves: `IMAGE` at the end or as a word, the
    // OLM convention, NVIDIA's `DRIVER_IMAGE-580`, lists under `IMAGES`; never a name that merely
    // contains the letters, nor one whose last word names a part of a reference.
    #[test]
    fn variable_names() {
        for n in ["CSI_ATTACHER_IMAGE", "RELATED_IMAGE_AGENT", "DRIVER_IMAGE-580", "sidecarImage", "X_IMAGE_REF"] {
            assert_eq!(variable_says(n), Some(Says::Image), "{n}");
        }
        assert_eq!(variable_says("STRIMZI_KAFKA_IMAGES"), Some(Says::Images));
        assert_eq!(variable_says("RELATED_IMAGE_REGISTRY"), Some(Says::Image), "OLM names are whole images");
        for n in [
            "IMAGINARY",
            "PULL_IMAGESECRET_X",
            "WATCH_NAMESPACE",
            "IMAGEPULLPOLICY",
            "OPERATOR_IMAGE_REPOSITORY",
            "AGENT_IMAGE_TAG",
            "IMAGE_PULL_POLICY",
            "IMAGE_REGISTRY",
        ] {
            assert_eq!(variable_says(n), None, "{n}");
        }
    }

    // Checks the flag forms rule 4 takes: one or two dashes, `=` or not, any name ending in
    // `image`; and that other arguments are not flags of this rule.
    #[test]
    fn flag_names() {
        assert_eq!(image_flag("--engine-image=a/b:1"), Some(("--engine-image", Some("a/b:1"))));
        assert_eq!(image_flag("-entrypoint-image"), Some(("-entrypoint-image", None)));
        assert_eq!(image_flag("--image"), Some(("--image", None)));
        for a in ["--image-pull-policy=Always", "image", "--", "-", "--v=2", "--manager-images=x", "--x image"] {
            assert_eq!(image_flag(a), None, "{a}");
        }
    }

    // Checks the false-positive guard: references with a host or a path are taken; switches,
    // versions and bare names never; a tagged bare name and a template are warnings; a value of
    // a ConfigMap named for images needs a host.
    #[test]
    fn guard() {
        assert_eq!(judge("quay.io/a/b:1", true), Verdict::Take);
        assert_eq!(judge("rook/ceph:v1.2", false), Verdict::Take);
        assert!(matches!(judge("rook/ceph:v1.2", true), Verdict::Warn(_)));
        for v in ["disabled", "true", "v1.2.3", "0", "", "IfNotPresent", "kind.local,ko.local"] {
            assert_eq!(judge(v, false), Verdict::Ignore, "{v}");
        }
        assert!(matches!(judge("busybox:1.36", false), Verdict::Warn(_)));
        assert!(matches!(judge("{{ .Values.image }}", false), Verdict::Warn(w) if w.contains("template")));
        assert!(matches!(judge("${REGISTRY}/app:1", false), Verdict::Warn(_)));
        assert!(matches!(judge("quay.io/Upper/x:1", false), Verdict::Warn(_)));
        assert_eq!(judge("text/plain", true), Verdict::Ignore, "a path without a host in an image ConfigMap");
    }

    // Checks list values: items split on white space and commas, `key=` prefixes dropped.
    #[test]
    fn lists() {
        let v = "4.2.0=quay.io/strimzi/kafka:1.2.0-kafka-4.2.0\n4.2.1=quay.io/strimzi/kafka:1.2.0-kafka-4.2.1\n";
        assert_eq!(
            list_items(v).collect::<Vec<_>>(),
            [
                (Some("4.2.0"), "quay.io/strimzi/kafka:1.2.0-kafka-4.2.0"),
                (Some("4.2.1"), "quay.io/strimzi/kafka:1.2.0-kafka-4.2.1")
            ]
        );
        assert_eq!(list_items("a/b:1, c/d:2").collect::<Vec<_>>(), [(None, "a/b:1"), (None, "c/d:2")]);
    }

    // Checks which ConfigMap values are read as YAML or JSON.
    #[test]
    fn structured_values() {
        assert!(structured("executor:\n  image: quay.io/a/b:1\n").is_some());
        assert!(structured("{\"image\": \"quay.io/a/b:1\"}").is_some());
        assert!(structured("quay.io/a/b:1").is_none());
        assert!(structured("just\ntext lines").is_none(), "a scalar is not structured");
    }
}
