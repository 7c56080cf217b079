//! `ferry push`: a storage tree into Harbor or any OCI registry, digests kept, each blob sent once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;

use indicatif::HumanBytes;
use serde::Serialize;

use super::Outcome;
use crate::cli::{GlobalArgs, PushArgs};
use crate::destination::{Mapping, project_of};
use crate::engine::{self, ImageStatus, RunCounts, RunResult};
use crate::inventory::Inventory;
use crate::progress::Progress;
use crate::registry::harbor::{self, ProjectStatus};
use crate::report::{write_json_file, write_lines_file};
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
    counts: &'a RunCounts,
    projects: &'a BTreeMap<String, Result<ProjectStatus, String>>,
    fatal: &'a Option<String>,
    images: &'a [engine::ImageOutcome],
}

pub fn run(args: &PushArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let filters = super::filters(&args.filters)?.with_shard(args.shard);
    let tree = super::open_source(&args.source)?;
    let client = super::connect(&args.registry, usize::from(args.jobs))?;
    let harbor = harbor::detect(&client).unwrap_or_else(|e| {
        crate::debug!(
            "Harbor detection failed ({e}); treating the destination as a plain registry"
        );
        false
    });
    let mapping = super::mapping(&args.mapping);
    let inventory = super::images_to_move(&tree, &filters, args.untagged)?;
    note!(
        "ferry push: {} images from {} to {}{}{}",
        inventory.images.len(),
        tree.v2().display(),
        client.base(),
        if harbor { " (Harbor)" } else { "" },
        if args.dry_run { ", dry run" } else { "" }
    );

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
    let sink = RegistrySink::new(&client, mapping, harbor, args.dry_run, broken_projects)
        .verifying_sources(args.verify);
    let result = engine::run(&sink, &inventory.images, usize::from(args.jobs), &progress);
    progress.finish();
    let elapsed = progress.elapsed();
    let counts = result.counts();

    if args.dry_run {
        print_plan(&result)?;
    }
    for image in result.images.iter() {
        if let ImageStatus::Failed(reason) = &image.status {
            match &image.target {
                Some(t) => error!("{} → {t}: {reason}", image.source),
                None => error!("{}: {reason}", image.source),
            }
        }
    }
    let failed = result.failed_list();
    write_lines_file(&args.failed_list, &failed)?;
    if let Some(path) = &global.report {
        write_json_file(
            path,
            &PushReport {
                command: "push",
                source: tree.v2().display().to_string(),
                destination: client.base(),
                harbor,
                dry_run: args.dry_run,
                elapsed_seconds: elapsed.as_secs_f64(),
                counts: &counts,
                projects: &projects,
                fatal: &result.fatal,
                images: &result.images,
            },
        )?;
    }
    note!("{}", summary(&counts, args.dry_run, elapsed));
    super::finish_run("push", &failed, &args.failed_list, result.fatal)
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

fn print_plan(result: &RunResult) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for image in &result.images {
        let target = image.target.as_deref().unwrap_or("-");
        match &image.status {
            ImageStatus::Skipped => {
                writeln!(out, "skip  {} → {target} (already there)", image.source)?
            }
            ImageStatus::Failed(reason) => {
                writeln!(out, "fail  {} → {target}: {reason}", image.source)?
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

fn summary(c: &RunCounts, dry_run: bool, elapsed: std::time::Duration) -> String {
    let blobs = |a: BlobAction| c.blobs.get(&a).copied().unwrap_or(0);
    let secs = elapsed.as_secs_f64().max(0.001);
    let (pushed, uploaded, sent) = if dry_run {
        ("to push", "to upload", "to send")
    } else {
        ("pushed", "uploaded", "sent")
    };
    format!(
        "images: {} {pushed}, {} skipped, {} failed; blobs: {} {uploaded}, {} mounted, {} already there; {} {sent} in {:.1} s ({}/s)",
        c.copied,
        c.skipped,
        c.failed,
        blobs(BlobAction::Uploaded),
        blobs(BlobAction::Mounted),
        blobs(BlobAction::Present),
        HumanBytes(c.bytes_written),
        secs,
        HumanBytes((c.bytes_written as f64 / secs) as u64)
    )
}
