//! Splitting one run over several processes (`--shard I/N`), for when one machine is not enough.
//!
//! The split is by target repository, never by image: every image whose target is in the same
//! repository lands in the same shard, so no repository is ever written by two pods at once (two
//! writers to one repository would race on its tags). Blobs shared by images of different shards
//! are still mounted from wherever the target already has them; at worst two shards upload the
//! same blob, which the registry de-duplicates by digest.
//!
//! The shard of a repository is a stable hash: the first 8 bytes of the SHA-256 of
//! `registry/repository`, big-endian, modulo N. Not Rust's `DefaultHasher`, which is seeded
//! differently in each process, so that N pods of one Kubernetes Indexed Job (each started with
//! its own `$JOB_COMPLETION_INDEX`) agree on the split without talking to each other.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::reference::Reference;

/// One part of a run: shard `index` of `count` (`0 <= index < count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// A `--shard` value that is not `I/N` with `0 <= I < N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad shard {value:?}: {reason} (expected I/N with 0 <= I < N, e.g. 0/4)")]
pub struct ShardError {
    pub value: String,
    pub reason: String,
}

impl Shard {
    /// The whole run as one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        let err = |reason: String| ShardError { value: format!("{index}/{count}"), reason };
        if count == 0 {
            return Err(err("the number of shards must be at least 1".into()));
        }
        if index >= count {
            return Err(err(format!("shard index {index} is not below the number of shards {count}")));
        }
        Ok(Shard { index, count })
    }

    /// Whether the image whose target is `target` belongs to this shard.
    pub fn contains(&self, target: &Reference) -> bool {
        shard_of(&target.registry, &target.repository, self.count) == self.index
    }

    /// Keeps the items whose target belongs to this shard, in their order.
    pub fn select<T>(&self, items: Vec<T>, target: impl Fn(&T) -> &Reference) -> Vec<T> {
        if self.count == 1 {
            return items;
        }
        items.into_iter().filter(|i| self.contains(target(i))).collect()
    }
}

/// The shard (`0..count`) of a target repository. `count` must be at least 1.
pub fn shard_of(registry: &str, repository: &str, count: u32) -> u32 {
    assert!(count >= 1, "shard count must be at least 1");
    let mut h = Sha256::new();
    h.update(registry.as_bytes());
    h.update(b"/");
    h.update(repository.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(first) % u64::from(count)) as u32
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let err = |reason: &str| ShardError { value: s.to_string(), reason: reason.to_string() };
        let (i, n) = s.trim().split_once('/').ok_or_else(|| err("no '/'"))?;
        let index: u32 = i.trim().parse().map_err(|_| err("the shard index is not a whole number"))?;
        let count: u32 = n.trim().parse().map_err(|_| err("the number of shards is not a whole number"))?;
        Shard::new(index, count).map_err(|e| ShardError { value: s.to_string(), reason: e.reason })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    fn targets() -> Vec<Reference> {
        // 60 repositories, some with several tags, as an image set has them.
        let mut v = Vec::new();
        for r in 0..60 {
            for t in 0..(1 + r % 3) {
                v.push(Reference::parse(&format!("myacr.azurecr.io/team{}/app{r}:v{t}", r % 7)).unwrap());
            }
        }
        v
    }

    #[test]
    fn shards_partition_the_set_and_never_split_a_repository() {
        // Checks, for N = 1..=5: every image is in exactly one shard (union = whole, pairwise
        // disjoint), and all tags of a repository are in the same shard.
        let all = targets();
        for n in 1..=5 {
            let mut seen: HashMap<String, u32> = HashMap::new();
            let mut repo_shard: HashMap<String, u32> = HashMap::new();
            for i in 0..n {
                let shard = Shard::new(i, n).unwrap();
                for t in shard.select(all.clone(), |r| r) {
                    assert!(seen.insert(t.to_string(), i).is_none(), "{t} in two shards of {n}");
                    let prev = repo_shard.insert(t.repository.clone(), i);
                    assert!(prev.is_none() || prev == Some(i), "repository {} split over shards of {n}", t.repository);
                }
            }
            let union: BTreeSet<&String> = seen.keys().collect();
            let whole: BTreeSet<String> = all.iter().map(|t| t.to_string()).collect();
            assert_eq!(union, whole.iter().collect(), "union of {n} shards is not the whole set");
        }
    }

    #[test]
    fn the_hash_is_stable_across_processes() {
        // Checks the split is the documented SHA-256 rule, not a per-process seeded hash: the
        // expected shards were computed outside Rust (Python: int.from_bytes(sha256(
        // b"myacr.azurecr.io/" + repo).digest()[:8], "big") % N), so any change of rule fails here.
        let cases =
            [("a", 1, 6), ("b", 0, 1), ("oss/kubernetes/pause", 1, 0), ("mirror/docker.io/library/redis", 3, 1)];
        for (repo, of5, of7) in cases {
            assert_eq!(shard_of("myacr.azurecr.io", repo, 5), of5, "{repo} of 5");
            assert_eq!(shard_of("myacr.azurecr.io", repo, 7), of7, "{repo} of 7");
        }
        // And the split is not degenerate: 60 repositories over 3 shards use every shard.
        let used: BTreeSet<u32> = targets().iter().map(|t| shard_of(&t.registry, &t.repository, 3)).collect();
        assert_eq!(used.len(), 3);
    }

    #[test]
    fn bad_shards_are_refused_with_the_reason() {
        // Checks the parser: I/N accepted, and each malformed form refused with a message saying why.
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard { index: 2, count: 4 });
        assert_eq!("0/1".parse::<Shard>().unwrap(), Shard::ALL);
        for (bad, why) in [
            ("4/4", "not below"),
            ("0/0", "at least 1"),
            ("1", "no '/'"),
            ("a/2", "index is not"),
            ("1/x", "number of shards is not"),
            ("-1/2", "index is not"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
    }
}
