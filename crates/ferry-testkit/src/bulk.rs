//! The bulk scenario: many repositories and tags over a shared pool of base layers, pushed in parallel.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::images::{Format, push_image, random_bytes};
use crate::media::Platform;
use crate::push::Pusher;
use crate::registry::Registry;
use crate::truth::{TaggedImage, Truth};

/// The shape of a bulk scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkSpec {
    pub repositories: usize,
    pub tags_per_repo: usize,
    /// Size of the shared pool of base layers; each image uses 1 or 2 of them.
    pub base_layers: usize,
    pub base_layer_bytes: usize,
    /// Size of the one layer each image has to itself (at least 1 byte is used).
    pub unique_layer_bytes: usize,
    /// Spread names over 1 to 4 path components; otherwise every name is `teamN/svc-M`.
    pub nesting: bool,
    pub seed: u64,
}

impl Default for BulkSpec {
    fn default() -> Self {
        BulkSpec {
            repositories: 20,
            tags_per_repo: 5,
            base_layers: 8,
            base_layer_bytes: 4096,
            unique_layer_bytes: 1024,
            nesting: true,
            seed: 1,
        }
    }
}

/// How many pushes run at once.
pub const BULK_THREADS: usize = 4;

/// The name of repository number `i` (0-based).
pub fn bulk_repo_name(i: usize, nesting: bool) -> String {
    if !nesting {
        return format!("team{}/svc-{i}", i % 10);
    }
    match i % 4 {
        0 => format!("single{i}"),
        1 => format!("team{}/svc-{i}", i % 10),
        2 => format!("grp{}/x/app{i}", i % 5),
        _ => format!("proj/a/b/app{i}"),
    }
}

/// The name of tag number `t` (0-based).
pub fn bulk_tag_name(t: usize) -> String {
    format!("v{t}")
}

/// Pushes the bulk scenario into `reg` from [`BULK_THREADS`] threads.
pub fn generate_bulk(reg: &Registry, spec: &BulkSpec) -> Result<Truth> {
    generate_bulk_at(&Pusher::new(reg), spec)
        .with_context(|| format!("bulk scenario; registry log tail:\n{}", reg.log_tail(15)))
}

/// [`generate_bulk`] against any registry reachable through `p`.
pub fn generate_bulk_at(p: &Pusher, spec: &BulkSpec) -> Result<Truth> {
    anyhow::ensure!(
        spec.base_layers > 0 || spec.repositories * spec.tags_per_repo == 0,
        "bulk scenario needs at least one base layer"
    );
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let pool: Vec<Vec<u8>> = (0..spec.base_layers)
        .map(|_| random_bytes(&mut rng, spec.base_layer_bytes.max(1)))
        .collect();

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<TaggedImage>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..BULK_THREADS.min(spec.repositories.max(1)) {
            s.spawn(|| {
                let p = p.clone();
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= spec.repositories {
                        break;
                    }
                    match push_repo(&p, spec, &pool, i) {
                        Ok(images) => results.lock().unwrap().extend(images),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            errors.lock().unwrap().push(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
        return Err(e);
    }
    let mut truth = Truth::default();
    for image in results.into_inner().map_err(|_| anyhow!("poisoned"))? {
        truth.add_tag(image);
    }
    truth.normalize();
    Ok(truth)
}

/// Pushes every tag of repository `i`; its content depends only on the seed and `i`.
fn push_repo(p: &Pusher, spec: &BulkSpec, pool: &[Vec<u8>], i: usize) -> Result<Vec<TaggedImage>> {
    let repo = bulk_repo_name(i, spec.nesting);
    let mut rng = fastrand::Rng::with_seed(
        spec.seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(i as u64 + 1),
    );
    let platform = Platform::new("linux", "amd64", None);
    let mut images = Vec::new();
    for t in 0..spec.tags_per_repo {
        let tag = bulk_tag_name(t);
        let first = rng.usize(..pool.len());
        let mut layers: Vec<&[u8]> = vec![&pool[first]];
        if pool.len() > 1 && rng.bool() {
            let mut second = rng.usize(..pool.len() - 1);
            if second >= first {
                second += 1;
            }
            layers.push(&pool[second]);
        }
        let own = random_bytes(&mut rng, spec.unique_layer_bytes.max(1));
        layers.push(&own);
        let format = if rng.bool() {
            Format::Docker
        } else {
            Format::Oci
        };
        let pushed = push_image(
            p,
            &repo,
            Some(&tag),
            format,
            &platform,
            &layers,
            &[("repo", &repo), ("tag", &tag)],
            None,
        )
        .with_context(|| format!("pushing {repo}:{tag}"))?;
        images.push(pushed.tagged(&repo, &tag));
    }
    Ok(images)
}
