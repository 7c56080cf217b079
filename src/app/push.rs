//! `ferry push`: a storage tree into Harbor or any OCI registry, digests kept, each blob sent once.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use anyhow::Context;
use indicatif::HumanBytes;
use serde::Serialize;

use super::Outcome;
use crate::cli::{GlobalArgs, PushArgs};
use crate::destination::project_of;
use crate::digest::Digest;
use crate::engine::depends::Subjects;
use crate::engine::{self, Copy, CopyCounts, Fatal, ImageOutcome, ImageStatus};
use crate::inventory::Image;
use crate::note;
use crate::preflight::{self, Need, Preflight};
use crate::progress::Progress;
use crate::registry::harbor::Account;
use crate::report::{write_json_file, write_lines_file};
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
    /// Per Harbor project: status, rights, quota, what this run adds, why it was refused.
    projects: &'a Preflight,
    /// Why the run stopped early, when it did.
    stopped: Option<String>,
    images: &'a [ImageOutcome],
}

pub fn run(args: &PushArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let filters = super::filters(&args.filters)?.with_shard(args.shard);
    let tree = super::open_source(&args.source)?;
    let stop = super::stop_switch();
    let destination = super::connect(&args.registry, usize::from(args.jobs), &stop, true)?;
    let client = &destination.client;
    let harbor = destination.harbor.as_ref();
    let mapping = super::mapping(&args.mapping);
    let inventory = super::images_to_move(&tree, &filters, args.untagged)?;
    note!(
        "ferry push: {} images from {} to {}{}{}",
        inventory.images.len(),
        tree.v2().display(),
        client.base(),
        if harbor.is_some() { " (Harbor)" } else { "" },
        if args.dry_run { ", dry run" } else { "" }
    );
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
    );
    let images = &inventory.images;
    let order = engine::plan_order(images);
    let subjects = Subjects::of(images);
    let run = engine::run(
        &Copy::new(&sink).after_subjects(&subjects, &stop),
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
                source: tree.v2().display().to_string(),
                destination: client.base(),
                harbor: harbor.is_some(),
                harbor_version: harbor.and_then(|h| h.version.as_deref()),
                harbor_account: harbor.map(|h| &h.account),
                dry_run: args.dry_run,
                elapsed_seconds: elapsed.as_secs_f64(),
                counts: &counts,
                projects: &preflight,
                stopped: run.stopped.as_ref().map(Fatal::to_string),
                images: &run.outcomes,
            },
        )?;
    }
    let mut line = summary(&counts, args.dry_run, elapsed);
    if let Some(v) = harbor.and_then(|h| h.version.as_deref()) {
        line += &format!(" (Harbor {v})");
    }
    note!("{line}");
    Ok(super::finish_run(
        "push",
        &failed,
        &args.failed_list,
        run.stopped.as_ref(),
    ))
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
