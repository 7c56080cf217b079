//! `ferry push`: a storage tree into Harbor or any OCI registry, digests kept, each blob sent once.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use anyhow::Context;
use indicatif::HumanBytes;
use serde::Serialize;

use super::Outcome;
use crate::cli::{GlobalArgs, PushArgs};
use crate::destination::{Mapping, project_of};
use crate::digest::Digest;
use crate::engine::depends::{self, Subjects};
use crate::engine::{self, Copy, CopyCounts, Fatal, ImageOutcome, ImageStatus};
use crate::inventory::Image;
use crate::manifest::ManifestKind;
use crate::note;
use crate::preflight::{self, Need, Preflight};
use crate::progress::Progress;
use crate::registry::harbor::Account;
use crate::report::{RetryTotals, write_json_file, write_lines_file};
use crate::shard::homes::{self, ShardPlan};
use crate::shard::{IndexFrom, Shard};
use crate::sink::BlobAction;
use crate::sink::registry::RegistrySink;

#[derive(Serialize)]
struct PushReport<'a> {
    command: &'static str,
    source: String,
    destination: &'a str,
    harbor: bool,
    /// Harbor's version (systeminfo), when it says.
    harbor_version: Option<&'a str>,
    /// Who Harbor took the credentials for.
    harbor_account: Option<&'a Account>,
    dry_run: bool,
    elapsed_seconds: f64,
    counts: &'a CopyCounts,
    /// Requests retried: in all, and those of no one image (each image's are in its record).
    retries: RetryTotals,
    /// Per Harbor project: status, rights, quota, what this run adds, why it was refused.
    projects: &'a Preflight,
    shard: Option<ShardReport<'a>>,
    /// Why the run stopped early, when it did.
    stopped: Option<String>,
    images: &'a [ImageOutcome],
}

/// `--shard`: which shard this was, and the blob homes it shared with the others.
#[derive(Serialize)]
struct ShardReport<'a> {
    index: u64,
    count: u64,
    index_from: IndexFrom,
    /// Images selected over every shard.
    all_images: usize,
    /// Blobs other shards mount from here: digest → home destination repository.
    home_blobs: &'a BTreeMap<Digest, String>,
    /// Blobs this shard mounts from other shards' homes: digest → home destination repository.
    foreign_homes: &'a BTreeMap<Digest, String>,
}

pub fn run(args: &PushArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let shard = super::shard(&args.shard)?;
    // Every shard reads every selected image: the blob homes must come out alike in each of them.
    let filters = super::filters(&args.filters)?;
    let tree = super::open_source(
        &args.source,
        args.subpath.as_deref(),
        crate::source::Needs::Blobs,
        args.cache_dir.as_deref(),
    )?;
    let stop = super::stop_switch();
    let destination = super::connect(&args.registry, usize::from(args.jobs), &stop, true)?;
    let client = &destination.client;
    let harbor = destination.harbor.as_ref();
    let mapping = super::mapping(&args.mapping);
    let mut inventory = super::images_to_move(tree.as_ref(), &filters, args.untagged)?;
    let ShardPlan {
        images,
        batches,
        foreign,
        own,
        all_images,
    } = homes::plan(
        std::mem::take(&mut inventory.images),
        shard.map_or(Shard::ALL, |(s, _)| s),
        |image| pushable(&mapping, harbor.is_some(), image),
    );
    inventory.images = images;
    note!(
        "ferry push: {} images from {} to {}{}{}",
        inventory.images.len(),
        tree.location().display(),
        client.base(),
        if harbor.is_some() { " (Harbor)" } else { "" },
        if args.dry_run { ", dry run" } else { "" }
    );
    if let Some((s, _)) = shard {
        note!(
            "shard {s}: {} of {all_images} images; home of {} blobs other shards mount, {} blobs to mount from other shards' homes",
            inventory.images.len(),
            own.len(),
            foreign.len()
        );
    }
    if let Some(h) = harbor {
        note!(
            "Harbor {}, signed in as {}",
            h.version.as_deref().unwrap_or("(version not shown)"),
            h.account
        );
    }

    let preflight = match harbor {
        Some(_) => preflight::check(
            client,
            &inventory.images,
            &mapping,
            Need::Push {
                create: !args.no_create_projects,
                dry_run: args.dry_run,
            },
        )
        .with_context(|| format!("cannot use destination {}", client.host()))?,
        None => Preflight::default(),
    };
    preflight.tell();

    let totals = inventory.totals();
    let foreign_homes: BTreeMap<Digest, String> =
        foreign.iter().map(|(d, r)| (*d, r.clone())).collect();
    let progress = Progress::new(
        if args.dry_run { "check" } else { "push" },
        inventory.images.len() as u64,
        totals.unique_bytes,
    );
    let sink = RegistrySink::new(
        client,
        mapping,
        harbor.is_some(),
        args.dry_run,
        preflight.projects(),
    )
    .expecting(inventory.images.iter().map(|i| i.blobs.len()).sum())
    .with_foreign_homes(foreign)
    .verifying_sources(args.verify.then_some(tree.as_ref()));
    let images = &inventory.images;
    // Home images first (other shards mount from them), in plan order within each group, and
    // still every signature after its subject.
    let mut batch_of = vec![0; images.len()];
    for (b, batch) in batches.iter().enumerate() {
        for &i in batch {
            batch_of[i] = b;
        }
    }
    let mut order = engine::plan_order(images);
    order.sort_by_key(|&i| batch_of[i]);
    let edges = depends::subjects(images);
    let order = depends::after_subjects(order, &edges);
    let subjects = Subjects::from_edges(images, &edges);
    drop(edges);
    let run = engine::run(
        &Copy::new(&sink, tree.as_ref()).after_subjects(&subjects, &stop),
        images,
        &order,
        usize::from(args.jobs),
        &progress,
        &stop,
    );
    progress.finish();
    let elapsed = progress.elapsed();
    let counts = CopyCounts::of(&run.outcomes);
    let retries = RetryTotals::new(client.retries(), run.outcomes.iter().map(|o| o.retries));

    if args.dry_run {
        print_plan(&run.outcomes)?;
        if harbor.is_some() {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            writeln!(out)?;
            preflight.write_table(&mut out, &planned_adds(&preflight, images, &run.outcomes))?;
            out.flush()?;
        }
    }
    super::report_failures(&run.outcomes);
    let failed = run.failed_list();
    write_lines_file(&args.failed_list, &failed)?;
    if let Some(path) = &global.report {
        write_json_file(
            path,
            &PushReport {
                command: "push",
                source: tree.location().display().to_string(),
                destination: client.base(),
                harbor: harbor.is_some(),
                harbor_version: harbor.and_then(|h| h.version.as_deref()),
                harbor_account: harbor.map(|h| &h.account),
                dry_run: args.dry_run,
                elapsed_seconds: elapsed.as_secs_f64(),
                counts: &counts,
                retries,
                projects: &preflight,
                shard: shard.map(|(s, from)| ShardReport {
                    index: s.index,
                    count: s.count,
                    index_from: from,
                    all_images,
                    home_blobs: &own,
                    foreign_homes: &foreign_homes,
                }),
                stopped: run.stopped.as_ref().map(Fatal::to_string),
                images: &run.outcomes,
            },
        )?;
    }
    let mut line = summary(&counts, args.dry_run, elapsed);
    line += &format!("; {} retries", retries.total);
    if let Some(v) = harbor.and_then(|h| h.version.as_deref()) {
        line += &format!(" (Harbor {v})");
    }
    note!("{line}");
    let outcome = super::finish_run("push", &failed, &args.failed_list, run.stopped.as_ref());
    Ok(super::with_source_problems(outcome, &inventory))
}

/// Where push will send `image`, for the blob homes: what `RegistrySink::target` decides from the
/// image and the flags alone (a project that cannot be used is only known later, in one shard).
fn pushable(mapping: &Mapping, harbor: bool, image: &Image) -> Option<String> {
    if image
        .manifest()
        .is_some_and(|m| m.kind() == ManifestKind::Schema1)
    {
        return None;
    }
    let destination = mapping.destination(&image.repository);
    mapping.check(&destination, harbor).ok()?;
    Some(destination)
}

/// Bytes a dry run's plan adds to each Harbor project: blobs it would upload or mount there
/// (each once per project) and the manifests of the images it would push.
fn planned_adds(
    preflight: &Preflight,
    images: &[Image],
    outcomes: &[ImageOutcome],
) -> BTreeMap<String, u64> {
    let mut adds: BTreeMap<String, u64> =
        preflight.projects.keys().map(|p| (p.clone(), 0)).collect();
    let mut seen: HashSet<(String, Digest)> = HashSet::new();
    for (image, outcome) in images.iter().zip(outcomes) {
        let (ImageStatus::Copied, Some(target)) = (&outcome.status, &outcome.target) else {
            continue;
        };
        let project = project_of(target).to_string();
        let blobs = outcome
            .blobs
            .iter()
            .filter(|b| matches!(b.action, BlobAction::Uploaded | BlobAction::Mounted))
            .map(|b| (b.digest, b.size));
        let manifests = image.manifests.iter().map(|m| (m.digest(), m.len()));
        for (digest, size) in blobs.chain(manifests) {
            if seen.insert((project.clone(), digest)) {
                *adds.entry(project.clone()).or_default() += size;
            }
        }
    }
    adds
}

fn print_plan(outcomes: &[ImageOutcome]) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for image in outcomes {
        let target = image.target.as_deref().unwrap_or("-");
        match &image.status {
            ImageStatus::Skipped => {
                writeln!(out, "skip  {} → {target} (already there)", image.source)?
            }
            ImageStatus::Failed(reason) => {
                writeln!(out, "fail  {} → {target}: {reason}", image.source)?
            }
            ImageStatus::NotDone(cause) => {
                writeln!(out, "stop  {} → {target}: {cause}", image.source)?
            }
            ImageStatus::Copied => {
                let mut upload = (0, 0u64);
                let mut mount = 0;
                let mut present = 0;
                for b in &image.blobs {
                    match b.action {
                        BlobAction::Uploaded => {
                            upload.0 += 1;
                            upload.1 += b.size;
                        }
                        BlobAction::Mounted => mount += 1,
                        _ => present += 1,
                    }
                }
                writeln!(
                    out,
                    "push  {} → {target}: upload {} blobs ({}), mount {mount}, already there {present}",
                    image.source,
                    upload.0,
                    HumanBytes(upload.1)
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn summary(c: &CopyCounts, dry_run: bool, elapsed: std::time::Duration) -> String {
    let blobs = |a: BlobAction| c.blobs.get(&a).copied().unwrap_or(0);
    let secs = elapsed.as_secs_f64().max(0.001);
    let (pushed, uploaded, sent) = if dry_run {
        ("to push", "to upload", "to send")
    } else {
        ("pushed", "uploaded", "sent")
    };
    format!(
        "images: {} {pushed}, {} skipped, {} failed{}; blobs: {} {uploaded}, {} mounted, {} already there; {} {sent} in {:.1} s ({}/s)",
        c.copied,
        c.skipped,
        c.failed,
        not_done(c),
        blobs(BlobAction::Uploaded),
        blobs(BlobAction::Mounted),
        blobs(BlobAction::Present),
        HumanBytes(c.bytes_written),
        secs,
        HumanBytes((c.bytes_written as f64 / secs) as u64)
    )
}

/// ", N not attempted" when the run stopped before some images.
pub fn not_done(c: &CopyCounts) -> String {
    if c.not_done == 0 {
        String::new()
    } else {
        format!(", {} not attempted", c.not_done)
    }
}
