//! Blob homes across shards: from the whole inventory, every shard computes alike one home image
//! for each blob that images of several shards need; the home's shard pushes it first, the others
//! mount the blob from the home's destination repository.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Shard;
use crate::digest::Digest;
use crate::inventory::Image;

/// What one shard works on, and in which order.
#[derive(Debug, Default)]
pub struct ShardPlan {
    /// This shard's images, in inventory order.
    pub images: Vec<Image>,
    /// Indexes into `images`, in groups the run takes in this order (no barrier between them): the images holding blobs this
    /// shard is home for (so other shards' mounts find them), then images that need nothing from
    /// another shard's homes, then the rest (by then those homes are more likely there).
    pub batches: Vec<Vec<usize>>,
    /// Blobs this shard needs whose home is another shard's: digest → the home's destination repository.
    pub foreign: HashMap<Digest, String>,
    /// Blobs other shards need that this shard is home for: digest → its home destination repository.
    pub own: BTreeMap<Digest, String>,
    /// Images selected over every shard.
    pub all_images: usize,
}

/// Splits `all` (the images every shard selects, in inventory order, the same in every shard)
/// into `shard`'s part and computes the homes. `destination` is where an image will be pushed,
/// or `None` when it will not be (broken, refused name): such images need no blob.
///
/// A blob's home is chosen among the shards needing it, largest blobs first, by the fewest home
/// bytes so far (so every shard has about as much to push first); within that shard, an image
/// that is already a home, else the first in inventory order.
pub fn plan(
    all: Vec<Image>,
    shard: Shard,
    destination: impl Fn(&Image) -> Option<String>,
) -> ShardPlan {
    let owners: Vec<u64> = all
        .iter()
        .map(|i| Shard::of(&i.repository, shard.count))
        .collect();
    let targets: Vec<Option<String>> = all
        .iter()
        .map(|i| if i.is_ok() { destination(i) } else { None })
        .collect();
    let mut users: BTreeMap<Digest, (u64, Vec<usize>)> = BTreeMap::new();
    for (i, image) in all.iter().enumerate() {
        if targets[i].is_none() {
            continue;
        }
        for b in &image.blobs {
            let entry = users.entry(b.digest).or_insert((b.size, Vec::new()));
            if entry.1.last() != Some(&i) {
                entry.1.push(i);
            }
        }
    }
    let mut shared: Vec<(u64, Digest, Vec<usize>)> = users
        .into_iter()
        .filter(|(_, (_, images))| {
            let first = owners[images[0]];
            images.iter().any(|&i| owners[i] != first)
        })
        .map(|(d, (size, images))| (size, d, images))
        .collect();
    shared.sort_by_key(|(size, d, _)| (std::cmp::Reverse(*size), *d));

    let mut load = vec![0u64; shard.count as usize];
    let mut home_images: HashSet<usize> = HashSet::new();
    let mut plan = ShardPlan {
        all_images: all.len(),
        ..ShardPlan::default()
    };
    for (size, digest, images) in &shared {
        let start = digest_number(digest) % shard.count;
        // Ties go round the shards from a point the digest picks, so equal loads spread evenly.
        let home_shard = images
            .iter()
            .map(|&i| owners[i])
            .min_by_key(|&s| (load[s as usize], (s + shard.count - start) % shard.count))
            .expect("a shared blob has users");
        load[home_shard as usize] += size;
        let in_shard = images.iter().copied().filter(|&i| owners[i] == home_shard);
        let home = in_shard
            .clone()
            .find(|i| home_images.contains(i))
            .or_else(|| in_shard.clone().next())
            .expect("the home shard has a user");
        home_images.insert(home);
        let repository = targets[home].clone().expect("users have targets");
        if home_shard == shard.index {
            plan.own.insert(*digest, repository);
        } else if images.iter().any(|&i| owners[i] == shard.index) {
            plan.foreign.insert(*digest, repository);
        }
    }

    let mut batches: [Vec<usize>; 3] = Default::default();
    let mut k = 0;
    for (i, image) in all.iter().enumerate() {
        if owners[i] != shard.index {
            continue;
        }
        let batch = if home_images.contains(&i) {
            0
        } else if image
            .blobs
            .iter()
            .all(|b| !plan.foreign.contains_key(&b.digest))
        {
            1
        } else {
            2
        };
        batches[batch].push(k);
        k += 1;
    }
    // This shard's images, kept in place: a second list of every image would double the memory.
    let mut all = all;
    let mut i = 0;
    all.retain(|_| {
        i += 1;
        owners[i - 1] == shard.index
    });
    plan.images = all;
    plan.batches = batches.into_iter().filter(|b| !b.is_empty()).collect();
    plan
}

/// A number from a digest's first 8 bytes.
fn digest_number(d: &Digest) -> u64 {
    u64::from_str_radix(&d.hex()[..16], 16).expect("hex")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::BlobRef;

    fn image(repository: &str, tag: &str, blobs: &[(&str, u64)]) -> Image {
        Image {
            repository: repository.to_string(),
            tag: Some(tag.to_string()),
            digest: Some(Digest::of(format!("{repository}:{tag}").as_bytes())),
            manifests: Vec::new(),
            refs: Vec::new(),
            blobs: blobs
                .iter()
                .map(|(name, size)| BlobRef {
                    digest: Digest::of(name.as_bytes()),
                    size: *size,
                    media_type: "application/octet-stream".into(),
                    role: "layer".into(),
                })
                .collect(),
            foreign: Vec::new(),
            platforms: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Repositories spread over `count` shards, every one of them with an image using `base`.
    fn tree() -> Vec<Image> {
        let mut images = Vec::new();
        for r in 0..40 {
            let repo = format!("team{}/app{r}", r % 5);
            images.push(image(
                &repo,
                "v1",
                &[("base-a", 1000), (&format!("own{r}"), 10)],
            ));
            images.push(image(
                &repo,
                "v2",
                &[("base-b", 800), ("base-c", 600), (&format!("own{r}-2"), 10)],
            ));
        }
        images.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
        images
    }

    fn dest(i: &Image) -> Option<String> {
        Some(format!("library/{}", i.repository))
    }

    #[test]
    fn every_shard_computes_the_same_homes() {
        let n = 3;
        let plans: Vec<ShardPlan> = (0..n)
            .map(|k| plan(tree(), Shard { index: k, count: n }, dest))
            .collect();
        let total: usize = plans.iter().map(|p| p.images.len()).sum();
        assert_eq!(total, 80, "each image in exactly one shard");
        for base in ["base-a", "base-b", "base-c"] {
            let d = Digest::of(base.as_bytes());
            let homes: Vec<&String> = plans.iter().filter_map(|p| p.own.get(&d)).collect();
            assert_eq!(homes.len(), 1, "{base} has one home shard");
            for p in plans.iter().filter(|p| !p.own.contains_key(&d)) {
                assert_eq!(
                    p.foreign.get(&d),
                    Some(homes[0]),
                    "{base}: others mount from the home"
                );
            }
        }
        // Unshared blobs have no home: the in-run once-per-digest guard covers them.
        let own0 = Digest::of(b"own0");
        assert!(
            plans
                .iter()
                .all(|p| !p.own.contains_key(&own0) && !p.foreign.contains_key(&own0))
        );
    }

    #[test]
    fn homes_spread_over_shards_and_go_first() {
        let n = 3;
        let plans: Vec<ShardPlan> = (0..n)
            .map(|k| plan(tree(), Shard { index: k, count: n }, dest))
            .collect();
        // Three shared blobs, three shards, loads balanced: one home each.
        assert!(
            plans.iter().all(|p| p.own.len() == 1),
            "{:?}",
            plans.iter().map(|p| &p.own).collect::<Vec<_>>()
        );
        for p in &plans {
            let first: Vec<&Image> = p.batches[0].iter().map(|&i| &p.images[i]).collect();
            let (d, repo) = p.own.iter().next().unwrap();
            assert!(
                first
                    .iter()
                    .any(|i| format!("library/{}", i.repository) == *repo
                        && i.blobs.iter().any(|b| b.digest == *d))
            );
            let mut seen: Vec<usize> = p.batches.concat();
            seen.sort();
            assert_eq!(
                seen,
                (0..p.images.len()).collect::<Vec<_>>(),
                "every image once"
            );
            // The last batch is the images needing another shard's home.
            for &i in p.batches.last().unwrap() {
                assert!(
                    p.images[i]
                        .blobs
                        .iter()
                        .any(|b| p.foreign.contains_key(&b.digest))
                );
            }
        }
    }

    #[test]
    fn one_shard_has_no_homes_and_one_batch() {
        let p = plan(tree(), Shard::ALL, dest);
        assert!(p.own.is_empty() && p.foreign.is_empty());
        assert_eq!(p.batches, vec![(0..80).collect::<Vec<_>>()]);
    }

    #[test]
    fn images_that_will_not_be_pushed_are_no_home() {
        let n = 2;
        let refuse = |i: &Image| {
            (!i.repository.starts_with("team0/")).then(|| format!("library/{}", i.repository))
        };
        for k in 0..n {
            let p = plan(tree(), Shard { index: k, count: n }, refuse);
            assert!(
                p.own
                    .values()
                    .chain(p.foreign.values())
                    .all(|r| !r.starts_with("library/team0/"))
            );
        }
    }
}
