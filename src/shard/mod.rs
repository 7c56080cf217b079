//! Shards: which repositories shard K of N takes, and K from `--shard K/N` or from a Kubernetes
//! Indexed Job's `JOB_COMPLETION_INDEX` (`--shard auto/N`, `--shard auto --shards N`).

pub mod homes;

use std::fmt;

use crate::digest::Digest;

/// The variable Kubernetes sets, in each pod of an Indexed Job, to the pod's completion index.
pub const INDEX_VARIABLE: &str = "JOB_COMPLETION_INDEX";

/// Shard `index` (0-based) of `count`: the repositories whose name hashes to `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The whole tree as one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The shard of `count` that `repository` (a source name) falls in. Stable across machines and
    /// versions: the first 8 bytes of sha256(name), modulo `count`.
    pub fn of(repository: &str, count: u64) -> u64 {
        let d = Digest::of(repository.as_bytes()).hex();
        let h = u64::from_str_radix(&d[..16], 16).expect("hex");
        h % count.max(1)
    }

    pub fn takes(&self, repository: &str) -> bool {
        Shard::of(repository, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `--shard` as typed: `K/N`, `auto/N`, or `auto` (N from `--shards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    Fixed(Shard),
    Auto { count: Option<u64> },
}

impl std::str::FromStr for ShardArg {
    type Err = String;
    fn from_str(s: &str) -> Result<ShardArg, String> {
        if s == "auto" {
            return Ok(ShardArg::Auto { count: None });
        }
        let (k, n) = s.split_once('/').ok_or_else(|| {
            format!("--shard {s:?}: expected K/N (for example 0/4), auto/N or auto")
        })?;
        let count: u64 = n
            .parse()
            .map_err(|_| format!("--shard {s:?}: N is not a number"))?;
        if count == 0 {
            return Err(format!("--shard {s:?}: N must be at least 1"));
        }
        if k == "auto" {
            return Ok(ShardArg::Auto { count: Some(count) });
        }
        let index: u64 = k
            .parse()
            .map_err(|_| format!("--shard {s:?}: K is not a number (or auto)"))?;
        if index >= count {
            return Err(format!("--shard {s:?}: need 0 <= K < N"));
        }
        Ok(ShardArg::Fixed(Shard { index, count }))
    }
}

/// Where a run's shard index came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IndexFrom {
    /// `--shard K/N`.
    Flag,
    /// `JOB_COMPLETION_INDEX` (`--shard auto`).
    Environment,
}

/// Resolves `--shard` and `--shards` into a shard; `env_index` is the value of `JOB_COMPLETION_INDEX`.
/// No `--shard` means no shard.
pub fn resolve(
    arg: Option<ShardArg>,
    shards: Option<u64>,
    env_index: Option<&str>,
) -> Result<Option<(Shard, IndexFrom)>, String> {
    let count = match (arg, shards) {
        (None, None) => return Ok(None),
        (None, Some(n)) => return Err(format!("--shards {n} goes with --shard auto")),
        (Some(ShardArg::Fixed(s)), Some(n)) if n != s.count => {
            return Err(format!("--shard {s} and --shards {n} disagree on N"));
        }
        (Some(ShardArg::Fixed(s)), _) => return Ok(Some((s, IndexFrom::Flag))),
        (Some(ShardArg::Auto { count: Some(a) }), Some(n)) if a != n => {
            return Err(format!("--shard auto/{a} and --shards {n} disagree on N"));
        }
        (Some(ShardArg::Auto { count: Some(n) }), _)
        | (Some(ShardArg::Auto { count: None }), Some(n)) => n,
        (Some(ShardArg::Auto { count: None }), None) => {
            return Err(
                "--shard auto needs the number of shards: --shard auto/N or --shard auto --shards N"
                    .into(),
            );
        }
    };
    if count == 0 {
        return Err("--shards must be at least 1".into());
    }
    let value = env_index.ok_or_else(|| {
        format!(
            "--shard auto takes K from {INDEX_VARIABLE}, which is not set (Kubernetes sets it in \
             each pod of an Indexed Job); elsewhere use --shard K/{count}"
        )
    })?;
    let index: u64 = value.parse().map_err(|_| {
        format!(
            "{INDEX_VARIABLE}={value:?} is not a shard index (a whole number from 0 to {})",
            count - 1
        )
    })?;
    if index >= count {
        return Err(format!(
            "{INDEX_VARIABLE}={index} is out of range for {count} shards (0 to {}): the Job's \
             completions must equal the N of --shard auto/N",
            count - 1
        ));
    }
    Ok(Some((Shard { index, count }, IndexFrom::Environment)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(k: u64, n: u64) -> Shard {
        Shard { index: k, count: n }
    }

    #[test]
    fn shards_split_everything_once() {
        let shards: Vec<Shard> = (0..3).map(|k| fixed(k, 3)).collect();
        for name in ["a", "b/c", "org/team/app", "alpine", "x9"] {
            assert_eq!(shards.iter().filter(|s| s.takes(name)).count(), 1);
        }
        assert!(Shard::ALL.takes("anything"));
    }

    #[test]
    fn the_hash_is_stable_across_versions() {
        // Shards of one run may be different ferry builds: these come from sha256 by hand (python3 hashlib).
        assert_eq!([2, 3, 4, 7].map(|n| Shard::of("alpine", n)), [1, 0, 3, 2]);
        assert_eq!(
            [2, 3, 4, 7].map(|n| Shard::of("org/team/app", n)),
            [0, 0, 2, 0]
        );
        assert_eq!(Shard::of("alpine", 1), 0);
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!("2/4".parse(), Ok(ShardArg::Fixed(fixed(2, 4))));
        assert_eq!("auto/4".parse(), Ok(ShardArg::Auto { count: Some(4) }));
        assert_eq!("auto".parse(), Ok(ShardArg::Auto { count: None }));
        for bad in [
            "4/4", "1", "x/4", "auto/0", "0/0", "auto/x", "-1/4", "Auto/4",
        ] {
            assert!(bad.parse::<ShardArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_takes_k_from_the_job_index() {
        let auto = |n| Some(ShardArg::Auto { count: n });
        assert_eq!(
            resolve(auto(Some(4)), None, Some("3")),
            Ok(Some((fixed(3, 4), IndexFrom::Environment)))
        );
        assert_eq!(
            resolve(auto(None), Some(4), Some("0")),
            Ok(Some((fixed(0, 4), IndexFrom::Environment)))
        );
        assert_eq!(
            resolve(auto(Some(4)), Some(4), Some("1")),
            Ok(Some((fixed(1, 4), IndexFrom::Environment)))
        );
        // The flag wins over the environment when K is given.
        assert_eq!(
            resolve(Some(ShardArg::Fixed(fixed(1, 2))), None, Some("0")),
            Ok(Some((fixed(1, 2), IndexFrom::Flag)))
        );
        assert_eq!(resolve(None, None, Some("1")), Ok(None));
    }

    #[test]
    fn auto_errors_say_what_is_wrong() {
        let auto = |n| Some(ShardArg::Auto { count: n });
        let err = |r: Result<_, String>| r.unwrap_err();
        assert!(
            err(resolve(auto(Some(4)), None, None))
                .contains("JOB_COMPLETION_INDEX, which is not set")
        );
        assert!(
            err(resolve(auto(Some(4)), None, Some("4")))
                .contains("JOB_COMPLETION_INDEX=4 is out of range for 4 shards (0 to 3)")
        );
        assert!(
            err(resolve(auto(Some(4)), None, Some("two"))).contains("\"two\" is not a shard index")
        );
        assert!(err(resolve(auto(Some(4)), None, Some(""))).contains("is not a shard index"));
        assert!(err(resolve(auto(None), None, Some("0"))).contains("needs the number of shards"));
        assert!(err(resolve(auto(Some(4)), Some(3), Some("0"))).contains("disagree"));
        assert!(
            err(resolve(Some(ShardArg::Fixed(fixed(0, 2))), Some(3), None)).contains("disagree")
        );
        assert!(err(resolve(None, Some(3), Some("0"))).contains("goes with --shard auto"));
    }
}
