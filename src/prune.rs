//! What `mirror prune` would retire, decided without a registry: the target's listing (tags,
//! their digests and ages, what each manifest refers to), the image set and the `prune:` rules
//! go in; every tag with what to do with it and why, and the manifests to delete, come out.
//!
//! The rules, in the order they are tried for each tag:
//! 1. a tag the image set names is kept (`needed`);
//! 2. a tag matching a `protect` pattern is kept (`protected`);
//! 3. signature and SBOM tags (`sha256-<hex>`, `.sig`, `.att`, `.sbom`) follow their subject:
//!    deleted with it, kept otherwise (`referrer`);
//! 4. of the rest, the `keepRecent` most recent are kept (`recent`; a tag of unknown age counts
//!    as recent, so it is never the one given up);
//! 5. a tag younger than `minAge`, or whose age is unknown while `minAge` is set, is kept
//!    (`young`, `ageUnknown`);
//! 6. the rest would be deleted (`unneeded`), unless its manifest must stay: a digest held by a
//!    kept tag, by a kept index, or named by the image set is never deleted. Where the registry
//!    deletes by digest only (distribution), such a tag is kept (`sharesDigest`, `partOfKept`);
//!    ACR can untag it and leave the manifest.
//!
//! Manifests go with their last tag: the digest of every deleted tag no kept one holds, the
//! children of a deleted index no kept manifest holds, and the referrers (signatures, SBOMs) of
//! everything deleted. The bytes to free are an estimate: the blobs of deleted manifests that
//! no kept manifest of the repository uses, which the registry's garbage collection frees.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::config::PruneRules;
use crate::digest::Digest;

/// How a registry takes a tag away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// ACR: untag (`DELETE /acr/v1/{repo}/_tags/{tag}`), then delete manifests left untagged.
    Untag,
    /// Distribution: only `DELETE /v2/{repo}/manifests/{digest}`, which drops every tag on it.
    ByDigest,
}

/// One tag of the target as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTag {
    pub name: String,
    pub digest: Digest,
    /// When the tag last changed (ACR) or the image was built (elsewhere); `None`: unknown.
    pub updated: Option<SystemTime>,
}

/// One repository of the target as listed, with what its manifests refer to.
#[derive(Debug, Clone, Default)]
pub struct RepoListing {
    pub repository: String,
    pub tags: Vec<ListedTag>,
    /// The children of each index among the listed manifests.
    pub children: HashMap<Digest, Vec<Digest>>,
    /// The blobs (digest and size) of each manifest, children included, as far as they were read.
    pub blobs: HashMap<Digest, Vec<(Digest, u64)>>,
    /// The referrers (signatures, SBOMs) of manifests that are not needed, as far as known.
    pub referrers: HashMap<Digest, Vec<Digest>>,
}

/// What the image set needs in one repository.
#[derive(Debug, Clone, Default)]
pub struct Needed {
    /// Repository → tags the image set names.
    pub tags: HashMap<String, HashSet<String>>,
    /// Repository → digests the image set names (`repo@sha256:…`).
    pub digests: HashMap<String, HashSet<Digest>>,
}

impl Needed {
    fn tag(&self, repo: &str, tag: &str) -> bool {
        self.tags.get(repo).is_some_and(|t| t.contains(tag))
    }
}

/// Why a tag stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// The image set names it.
    Needed,
    /// It matches this `protect` pattern.
    Protected(String),
    /// A signature or SBOM of a manifest that stays.
    Referrer,
    /// One of the `keepRecent` most recent of the tags the image set does not need.
    Recent,
    /// Younger than `minAge`.
    Young,
    /// Its age is unknown and `minAge` is set.
    AgeUnknown,
    /// Distribution: its digest is also this kept tag's, and deleting by digest would take both.
    SharesDigest(String),
    /// Distribution: its manifest is a child of this kept tag's index (or is named by the image set).
    PartOfKept(String),
}

impl Keep {
    /// The stable name reports carry (`reasonCode`).
    pub fn code(&self) -> &'static str {
        match self {
            Keep::Needed => "needed",
            Keep::Protected(_) => "protected",
            Keep::Referrer => "referrer",
            Keep::Recent => "recent",
            Keep::Young => "young",
            Keep::AgeUnknown => "ageUnknown",
            Keep::SharesDigest(_) => "sharesDigest",
            Keep::PartOfKept(_) => "partOfKept",
        }
    }
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keep::Needed => write!(f, "the image set needs it"),
            Keep::Protected(p) => write!(f, "protected by {p:?}"),
            Keep::Referrer => write!(f, "a signature or SBOM of a manifest that stays"),
            Keep::Recent => write!(f, "one of the keepRecent most recent"),
            Keep::Young => write!(f, "younger than minAge"),
            Keep::AgeUnknown => write!(f, "its age is unknown, and minAge is set"),
            Keep::SharesDigest(t) => {
                write!(f, "its manifest is also tag {t:?}, which stays, and this registry deletes by digest only")
            }
            Keep::PartOfKept(t) => write!(f, "its manifest is part of {t}, which stays"),
        }
    }
}

/// Why a tag goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delete {
    /// Not needed, not protected, not among the most recent, older than `minAge`.
    Unneeded,
    /// A signature or SBOM tag of this manifest, which is deleted.
    ReferrerOf(Digest),
}

impl Delete {
    pub fn code(&self) -> &'static str {
        match self {
            Delete::Unneeded => "unneeded",
            Delete::ReferrerOf(_) => "referrer",
        }
    }
}

impl std::fmt::Display for Delete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delete::Unneeded => {
                write!(f, "the image set no longer needs it; older than minAge and not among the keepRecent most recent")
            }
            Delete::ReferrerOf(d) => write!(f, "a signature or SBOM of {d}, which is deleted"),
        }
    }
}

/// What happens to one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Keep(Keep),
    Delete(Delete),
}

/// One tag and its fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagDecision {
    pub tag: ListedTag,
    pub decision: Decision,
}

impl TagDecision {
    pub fn deletes(&self) -> bool {
        matches!(self.decision, Decision::Delete(_))
    }
}

/// Why a manifest is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestRole {
    /// The last of its tags is deleted.
    Tagged,
    /// A child of a deleted index.
    Child,
    /// A signature or SBOM of a deleted manifest.
    Referrer,
}

impl ManifestRole {
    pub fn code(&self) -> &'static str {
        match self {
            ManifestRole::Tagged => "tagged",
            ManifestRole::Child => "child",
            ManifestRole::Referrer => "referrer",
        }
    }
}

/// A manifest to delete by digest, in the order it is to be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestDeletion {
    pub digest: Digest,
    pub role: ManifestRole,
    /// The deleted tags that pointed at it (for `Tagged`); it is deleted only if none of them
    /// moved since the listing.
    pub tags: Vec<String>,
    /// For a child or a referrer: the manifest it goes with, which must be deleted first.
    pub subject: Option<Digest>,
}

/// One repository's decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPrune {
    pub repository: String,
    /// Every tag, in name order.
    pub tags: Vec<TagDecision>,
    /// Manifests to delete, subjects before their referrers and indexes before their children.
    pub manifests: Vec<ManifestDeletion>,
    pub bytes_to_free: u64,
}

/// The decisions for every repository in scope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrunePlan {
    pub repositories: Vec<RepoPrune>,
}

impl PrunePlan {
    pub fn tags_to_delete(&self) -> usize {
        self.repositories.iter().map(|r| r.tags.iter().filter(|t| t.deletes()).count()).sum()
    }
    pub fn manifests_to_delete(&self) -> usize {
        self.repositories.iter().map(|r| r.manifests.len()).sum()
    }
    pub fn bytes_to_free(&self) -> u64 {
        self.repositories.iter().map(|r| r.bytes_to_free).sum()
    }
}

/// The subject of a signature or SBOM tag: `sha256-<hex>` (the OCI referrers tag schema) or
/// cosign's `sha256-<hex>.sig`, `.att`, `.sbom`.
pub fn referrer_subject(tag: &str) -> Option<Digest> {
    let rest = tag.strip_prefix("sha256-")?;
    let hex = rest.split_once('.').map_or(rest, |(h, suffix)| match suffix {
        "sig" | "att" | "sbom" => h,
        _ => "",
    });
    (hex.len() == 64).then(|| Digest::parse(&format!("sha256:{hex}")).ok())?
}

/// Decides every repository (see the module documentation for the rules).
pub fn plan(
    listings: &[RepoListing],
    needed: &Needed,
    rules: &PruneRules,
    mode: DeleteMode,
    now: SystemTime,
) -> PrunePlan {
    PrunePlan { repositories: listings.iter().map(|l| plan_repo(l, needed, rules, mode, now)).collect() }
}

fn plan_repo(l: &RepoListing, needed: &Needed, rules: &PruneRules, mode: DeleteMode, now: SystemTime) -> RepoPrune {
    let repo = l.repository.as_str();
    let mut tags: Vec<ListedTag> = l.tags.clone();
    tags.sort_by(|a, b| a.name.cmp(&b.name));
    let mut decided: BTreeMap<String, Decision> = BTreeMap::new();
    // 1–3: needed, protected; referrer tags wait for their subjects.
    let mut candidates = Vec::new();
    for t in &tags {
        if needed.tag(repo, &t.name) {
            decided.insert(t.name.clone(), Decision::Keep(Keep::Needed));
        } else if let Some(p) = rules.protect.iter().find(|p| p.is_match(&t.name)) {
            decided.insert(t.name.clone(), Decision::Keep(Keep::Protected(p.as_str().to_string())));
        } else if referrer_subject(&t.name).is_none() {
            candidates.push(t);
        }
    }
    // 4: the most recent first; unknown ages count as the most recent; ties by name.
    candidates.sort_by(|a, b| match (a.updated, b.updated) {
        (None, None) => a.name.cmp(&b.name),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| a.name.cmp(&b.name)),
    });
    for (rank, t) in candidates.iter().enumerate() {
        let keep = if rank < rules.keep_recent {
            Some(Keep::Recent)
        } else if rules.min_age > Duration::ZERO {
            match t.updated {
                None => Some(Keep::AgeUnknown),
                Some(u) if now.duration_since(u).unwrap_or(Duration::ZERO) < rules.min_age => Some(Keep::Young),
                Some(_) => None,
            }
        } else {
            None
        };
        decided.insert(t.name.clone(), keep.map_or(Decision::Delete(Delete::Unneeded), Decision::Keep));
    }
    // 6: what stays holds its digests, and their children.
    let by_name: HashMap<&str, &ListedTag> = tags.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut held: HashMap<Digest, String> = HashMap::new();
    let hold = |held: &mut HashMap<Digest, String>, d: &Digest, by: String| {
        held.entry(d.clone()).or_insert_with(|| by.clone());
        for c in l.children.get(d).into_iter().flatten() {
            held.entry(c.clone()).or_insert_with(|| format!("{by} (an index)"));
        }
    };
    for d in needed.digests.get(repo).into_iter().flatten() {
        hold(&mut held, d, format!("{repo}@{d} of the image set"));
    }
    // Non-referrer tags first: a kept referrer tag of a deleted subject is settled below.
    for (name, decision) in &decided {
        if let Decision::Keep(_) = decision {
            hold(&mut held, &by_name[name.as_str()].digest, format!("tag {name:?}"));
        }
    }
    // The digests of kept tags themselves, for the shared-digest reason.
    let kept_tag_of: HashMap<Digest, String> = decided
        .iter()
        .filter(|(_, d)| matches!(d, Decision::Keep(_)))
        .map(|(n, _)| (by_name[n.as_str()].digest.clone(), n.clone()))
        .collect();
    if mode == DeleteMode::ByDigest {
        // Deleting by digest takes every tag on the manifest: a tag whose manifest stays, stays.
        for (name, decision) in decided.iter_mut() {
            if !matches!(decision, Decision::Delete(_)) {
                continue;
            }
            let d = &by_name[name.as_str()].digest;
            if let Some(other) = kept_tag_of.get(d) {
                *decision = Decision::Keep(Keep::SharesDigest(other.to_string()));
            } else if let Some(by) = held.get(d) {
                *decision = Decision::Keep(Keep::PartOfKept(by.clone()));
            }
        }
    }
    // Manifests that go: the digests of deleted tags no one else holds, then their children.
    let mut manifests: Vec<ManifestDeletion> = Vec::new();
    let mut going: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for (name, decision) in &decided {
        if matches!(decision, Decision::Delete(_)) {
            going.entry(by_name[name.as_str()].digest.clone()).or_default().push(name.clone());
        }
    }
    let mut seen: HashSet<Digest> = HashSet::new();
    for (d, names) in &going {
        if !held.contains_key(d) && seen.insert(d.clone()) {
            manifests.push(ManifestDeletion {
                digest: d.clone(),
                role: ManifestRole::Tagged,
                tags: names.clone(),
                subject: None,
            });
        }
    }
    // Signature and SBOM tags follow their subjects.
    let deleted_subjects: HashSet<Digest> = manifests.iter().map(|m| m.digest.clone()).collect();
    for t in &tags {
        if decided.contains_key(&t.name) {
            continue;
        }
        let subject = referrer_subject(&t.name).expect("only referrer tags are left undecided");
        let decision = if deleted_subjects.contains(&subject) && !held.contains_key(&t.digest) {
            if seen.insert(t.digest.clone()) {
                manifests.push(ManifestDeletion {
                    digest: t.digest.clone(),
                    role: ManifestRole::Referrer,
                    tags: vec![t.name.clone()],
                    subject: Some(subject.clone()),
                });
            } else if let Some(m) = manifests.iter_mut().find(|m| m.digest == t.digest) {
                m.tags.push(t.name.clone());
            }
            Decision::Delete(Delete::ReferrerOf(subject))
        } else {
            hold(&mut held, &t.digest, format!("tag {:?}", t.name));
            Decision::Keep(Keep::Referrer)
        };
        decided.insert(t.name.clone(), decision);
    }
    // Referrers found through the API (and the manifests a tag-schema index lists), then the
    // children of deleted indexes.
    let subjects: Vec<Digest> = manifests.iter().map(|m| m.digest.clone()).collect();
    for s in &subjects {
        for r in l.referrers.get(s).into_iter().flatten() {
            if !held.contains_key(r) && seen.insert(r.clone()) {
                manifests.push(ManifestDeletion {
                    digest: r.clone(),
                    role: ManifestRole::Referrer,
                    tags: Vec::new(),
                    subject: Some(s.clone()),
                });
            }
        }
    }
    for s in &subjects {
        for c in l.children.get(s).into_iter().flatten() {
            if !held.contains_key(c) && seen.insert(c.clone()) {
                manifests.push(ManifestDeletion {
                    digest: c.clone(),
                    role: ManifestRole::Child,
                    tags: Vec::new(),
                    subject: Some(s.clone()),
                });
            }
        }
    }
    let bytes_to_free = freed_bytes(l, &manifests, &seen);
    let tags = tags
        .into_iter()
        .map(|t| {
            let decision = decided.remove(&t.name).expect("every tag is decided");
            TagDecision { tag: t, decision }
        })
        .collect();
    RepoPrune { repository: l.repository.clone(), tags, manifests, bytes_to_free }
}

/// The blobs of deleted manifests that no other listed manifest uses, counted once each.
fn freed_bytes(l: &RepoListing, manifests: &[ManifestDeletion], deleted: &HashSet<Digest>) -> u64 {
    let kept: HashSet<&Digest> =
        l.blobs.iter().filter(|(m, _)| !deleted.contains(*m)).flat_map(|(_, b)| b.iter().map(|(d, _)| d)).collect();
    let mut freed: BTreeSet<(&Digest, u64)> = BTreeSet::new();
    for m in manifests {
        for (d, size) in l.blobs.get(&m.digest).into_iter().flatten() {
            if !kept.contains(d) {
                freed.insert((d, *size));
            }
        }
    }
    freed.iter().map(|(_, s)| s).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + DAY * 1000
    }

    /// A tag `days` old (`None`: age unknown).
    fn tag(name: &str, digest: u8, days: Option<u64>) -> ListedTag {
        ListedTag { name: name.into(), digest: d(digest), updated: days.map(|n| now() - DAY * n as u32) }
    }

    fn rules(min_age_days: u64, keep_recent: usize, protect: &[&str]) -> PruneRules {
        PruneRules {
            min_age: DAY * min_age_days as u32,
            keep_recent,
            protect: protect.iter().map(|p| regex::Regex::new(p).unwrap()).collect(),
        }
    }

    fn needing(repo: &str, tags: &[&str]) -> Needed {
        let mut n = Needed::default();
        n.tags.insert(repo.into(), tags.iter().map(|t| t.to_string()).collect());
        n
    }

    fn listing(tags: Vec<ListedTag>) -> RepoListing {
        RepoListing { repository: "mirror/app".into(), tags, ..Default::default() }
    }

    fn decision<'a>(p: &'a RepoPrune, tag: &str) -> &'a Decision {
        &p.tags.iter().find(|t| t.tag.name == tag).unwrap().decision
    }

    fn one(l: RepoListing, n: &Needed, r: &PruneRules, mode: DeleteMode) -> RepoPrune {
        plan(&[l], n, r, mode, now()).repositories.remove(0)
    }

    #[test]
    fn only_tags_the_image_set_dropped_go_and_protect_keep_recent_and_min_age_hold() {
        // Checks each rule in turn on one repository: needed, protected, the most recent kept,
        // young and unknown ages kept, and exactly the rest deleted, each with its reason.
        let l = listing(vec![
            tag("1.3", 1, Some(30)),
            tag("v2.0", 2, Some(90)),
            tag("1.2", 3, Some(20)),
            tag("1.1", 4, Some(40)),
            tag("1.0", 5, Some(50)),
            tag("nightly", 6, Some(1)),
            tag("mystery", 7, None),
            tag("0.9", 8, Some(60)),
        ]);
        let p = one(l, &needing("mirror/app", &["1.3"]), &rules(7, 2, &[r"^v\d+\.\d+$"]), DeleteMode::Untag);
        assert_eq!(decision(&p, "1.3"), &Decision::Keep(Keep::Needed));
        assert_eq!(decision(&p, "v2.0"), &Decision::Keep(Keep::Protected(r"^v\d+\.\d+$".into())));
        // Unknown age counts as most recent: "mystery" and "nightly" take the two recent places.
        assert_eq!(decision(&p, "mystery"), &Decision::Keep(Keep::Recent));
        assert_eq!(decision(&p, "nightly"), &Decision::Keep(Keep::Recent));
        for gone in ["1.2", "1.1", "1.0", "0.9"] {
            assert_eq!(decision(&p, gone), &Decision::Delete(Delete::Unneeded), "{gone}");
        }
        assert_eq!(p.manifests.iter().map(|m| m.digest.clone()).collect::<Vec<_>>().len(), 4);
        // keepRecent 0: the young tag and the unknown age are kept by minAge instead.
        let p = one(
            listing(vec![tag("nightly", 6, Some(1)), tag("mystery", 7, None), tag("old", 8, Some(8))]),
            &Needed::default(),
            &rules(7, 0, &[]),
            DeleteMode::Untag,
        );
        assert_eq!(decision(&p, "nightly"), &Decision::Keep(Keep::Young));
        assert_eq!(decision(&p, "mystery"), &Decision::Keep(Keep::AgeUnknown));
        assert_eq!(decision(&p, "old"), &Decision::Delete(Delete::Unneeded));
        // minAge 0s: age does not matter, an unknown one included.
        let p = one(listing(vec![tag("mystery", 7, None)]), &Needed::default(), &rules(0, 0, &[]), DeleteMode::Untag);
        assert_eq!(decision(&p, "mystery"), &Decision::Delete(Delete::Unneeded));
    }

    #[test]
    fn a_digest_a_kept_tag_holds_is_never_deleted() {
        // Checks both registry kinds: distribution keeps a tag sharing a kept tag's digest (and
        // says which), ACR untags it but keeps the manifest; a child of a kept index and a
        // digest the image set pins are held the same way.
        let mut l = listing(vec![tag("keep", 1, Some(30)), tag("alias", 1, Some(30)), tag("platform", 2, Some(30))]);
        l.tags.push(tag("pinned-alias", 3, Some(30)));
        l.children.insert(d(1), vec![d(2)]);
        let mut n = needing("mirror/app", &["keep"]);
        n.digests.insert("mirror/app".into(), [d(3)].into_iter().collect());
        let p = one(l.clone(), &n, &rules(0, 0, &[]), DeleteMode::ByDigest);
        assert_eq!(decision(&p, "alias"), &Decision::Keep(Keep::SharesDigest("keep".into())));
        assert!(matches!(decision(&p, "platform"), Decision::Keep(Keep::PartOfKept(by)) if by.contains("keep")));
        assert!(matches!(decision(&p, "pinned-alias"), Decision::Keep(Keep::PartOfKept(by)) if by.contains("image set")));
        assert!(p.manifests.is_empty());
        let p = one(l, &n, &rules(0, 0, &[]), DeleteMode::Untag);
        for t in ["alias", "platform", "pinned-alias"] {
            assert_eq!(decision(&p, t), &Decision::Delete(Delete::Unneeded), "{t}");
        }
        assert!(p.manifests.is_empty(), "untagged, but every manifest stays: {:?}", p.manifests);
    }

    #[test]
    fn manifests_go_with_their_referrers_and_children_and_free_unshared_blobs() {
        // Checks what goes with a deleted index: its signature tag (cosign) and referrer-tag
        // index (tags in name order), the referrers the API listed, its children not held
        // elsewhere, in that order;
        // and the bytes: blobs of deleted manifests no kept manifest uses.
        let old = d(10);
        let sig = format!("sha256-{}.sig", old.hex());
        let fallback = format!("sha256-{}", old.hex());
        let mut l = listing(vec![
            tag("old", 10, Some(30)),
            tag("new", 20, Some(30)),
            tag(&sig, 11, Some(30)),
            tag(&fallback, 12, Some(30)),
            tag(&format!("sha256-{}.sig", d(20).hex()), 21, Some(30)),
        ]);
        l.children.insert(old.clone(), vec![d(13), d(22)]);
        l.children.insert(d(20), vec![d(22)]);
        l.referrers.insert(old.clone(), vec![d(14), d(11)]);
        l.blobs.insert(d(13), vec![(d(100), 1000), (d(101), 7)]);
        l.blobs.insert(d(22), vec![(d(101), 7)]);
        let p = one(l, &needing("mirror/app", &["new"]), &rules(0, 0, &[]), DeleteMode::ByDigest);
        let order: Vec<(Digest, ManifestRole)> = p.manifests.iter().map(|m| (m.digest.clone(), m.role)).collect();
        assert_eq!(
            order,
            vec![
                (old.clone(), ManifestRole::Tagged),
                (d(12), ManifestRole::Referrer),
                (d(11), ManifestRole::Referrer),
                (d(14), ManifestRole::Referrer),
                (d(13), ManifestRole::Child),
            ]
        );
        assert_eq!(decision(&p, &sig), &Decision::Delete(Delete::ReferrerOf(old.clone())));
        assert_eq!(decision(&p, &format!("sha256-{}.sig", d(20).hex())), &Decision::Keep(Keep::Referrer));
        assert_eq!(p.bytes_to_free, 1000, "blob 101 is shared with the kept index's child");
    }

    #[test]
    fn referrer_tags_are_recognised_only_in_their_schemas() {
        // Checks the OCI tag schema and cosign's suffixes, and that look-alikes are plain tags.
        let hex = d(1).hex().to_string();
        assert_eq!(referrer_subject(&format!("sha256-{hex}")), Some(d(1)));
        assert_eq!(referrer_subject(&format!("sha256-{hex}.att")), Some(d(1)));
        assert_eq!(referrer_subject(&format!("sha256-{hex}.other")), None);
        assert_eq!(referrer_subject("sha256-abc.sig"), None);
        assert_eq!(referrer_subject("1.0"), None);
    }
}
