//! `ferry push`: a storage tree into Harbor or any OCI registry, digests kept, each blob sent once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;

use indicatif::HumanBytes;
use serde::Serialize;

use super::Outcome;
use crate::cli::{GlobalArgs, PushArgs};
use crate::destination::{Mapping, project_of};
use crate::digest::Digest;
use crate::engine::{self, Copy, CopyCounts, Fatal, ImageOutcome, ImageStatus};
use crate::inventory::{Image, Inventory};
use crate::manifest::ManifestKind;
use crate::progress::Progress;
use crate::registry::harbor::{self, ProjectStatus};
use crate::report::{write_json_file, write_lines_file};
use crate::shard::homes::{self, ShardPlan};
use crate::shard::{IndexFrom, Shard};
use crate::sink::BlobAction;
use crate::sink::registry::RegistrySink;
use crate::{error, note};

#[derive(Serialize)]
struct PushReport<'a> {
    command: &'static str,
    source: String,
    destination: &'a str,
    harbor: bool,
    dry_run: bool,
    elapsed_seconds: f64,
    counts: &'a CopyCounts,
    projects: &'a BTreeMap<String, Result<ProjectStatus, String>>,
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
    let client = super::connect(&args.registry, usize::from(args.jobs), &stop)?;
    let harbor = harbor::detect(&client);
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
        |image| pushable(&mapping, harbor, image),
    );
    inventory.images = images;
    note!(
        "ferry push: {} images from {} to {}{}{}",
        inventory.images.len(),
        tree.location().display(),
        client.base(),
        if harbor { " (Harbor)" } else { "" },
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

    let projects = if harbor && !args.no_create_projects {
        ensure_projects(&client, &inventory, &mapping, args.dry_run)?
    } else {
        BTreeMap::new()
    };
    let broken_projects: HashMap<String, String> = projects
        .iter()
        .filter_map(|(p, r)| r.as_ref().err().map(|e| (p.clone(), e.clone())))
        .collect();

    let totals = inventory.totals();
    let progress = Progress::new(
        if args.dry_run { "check" } else { "push" },
        inventory.images.len() as u64,
        totals.unique_bytes,
    );
    let foreign_homes: BTreeMap<Digest, String> =
        foreign.iter().map(|(d, r)| (*d, r.clone())).collect();
    let sink = RegistrySink::new(&client, mapping, harbor, args.dry_run, broken_projects)
        .with_foreign_homes(foreign);
    let images = &inventory.images;
    // Home images first (other shards mount from them), in plan order within each batch.
    let mut batch_of = vec![0; images.len()];
    for (b, batch) in batches.iter().enumerate() {
        for &i in batch {
            batch_of[i] = b;
        }
    }
    let mut order = engine::plan_order(images);
    order.sort_by_key(|&i| batch_of[i]);
    let run = engine::run(
        &Copy::new(&sink, tree.as_ref()),
        images,
        &order,
        usize::from(args.jobs),
        &progress,
        &stop,
    );
    progress.finish();
    let elapsed = progress.elapsed();
    let counts = CopyCounts::of(&run.outcomes);

    if args.dry_run {
        print_plan(&run.outcomes)?;
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
                harbor,
                dry_run: args.dry_run,
                elapsed_seconds: elapsed.as_secs_f64(),
                counts: &counts,
                projects: &projects,
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
    note!("{}", summary(&counts, args.dry_run, elapsed));
    let outcome = super::finish_run("push", &failed, &args.failed_list, run.stopped.as_ref());
    Ok(super::with_source_problems(outcome, &inventory))
}

/// Where push will send `image`, for the blob homes: what `RegistrySink::target` decides from the
/// image and the flags alone (a project that cannot be created is only known later, in one shard).
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

/// Creates (or, in a dry run, checks) the Harbor projects the selected images need.
fn ensure_projects(
    client: &crate::registry::Client,
    inventory: &Inventory,
    mapping: &Mapping,
    dry_run: bool,
) -> anyhow::Result<BTreeMap<String, Result<ProjectStatus, String>>> {
    let needed: BTreeSet<String> = inventory
        .images
        .iter()
        .filter(|i| i.is_ok())
        .map(|i| mapping.destination(&i.repository))
        .filter(|d| mapping.check(d, true).is_ok())
        .map(|d| project_of(&d).to_string())
        .collect();
    let mut out = BTreeMap::new();
    for project in needed {
        match harbor::ensure_project(client, &project, dry_run) {
            Ok(status) => {
                match status {
                    ProjectStatus::Created => note!("created Harbor project {project}"),
                    ProjectStatus::WouldCreate => note!("would create Harbor project {project}"),
                    ProjectStatus::Exists => {}
                }
                out.insert(project, Ok(status));
            }
            Err(e) if e.is_unauthorized() => {
                anyhow::bail!("cannot use destination {}: {e}", client.base())
            }
            Err(e) => {
                let reason = format!("Harbor project {project}: {e}");
                error!("{reason}");
                out.insert(project, Err(reason));
            }
        }
    }
    Ok(out)
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
