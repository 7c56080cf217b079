//! `ferry export`: a storage tree as skopeo `dir:` folders or OCI layouts, hard-linked where possible, the source untouched.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::HumanBytes;
use serde::Serialize;

use super::Outcome;
use crate::cli::{ExportArgs, GlobalArgs};
use crate::engine::{self, Copy, CopyCounts, Fatal, ImageOutcome};
use crate::inventory::Image;
use crate::note;
use crate::progress::Progress;
use crate::report::{write_json_file, write_lines_file};
use crate::sink::dir_layout::DirLayout;
use crate::sink::layout::{FileTotals, Layout, prepare_out};
use crate::sink::link::{Ladder, LinkMode};
use crate::sink::oci_layout::OciLayout;
use crate::source::Source;

#[derive(Serialize)]
struct ExportReport<'a> {
    command: &'static str,
    source: String,
    out: String,
    layout: Layout,
    link: LinkMode,
    verify: bool,
    elapsed_seconds: f64,
    counts: &'a CopyCounts,
    files: &'a FileTotals,
    /// Why the run stopped early, when it did.
    stopped: Option<String>,
    images: &'a [ImageOutcome],
}

pub fn run(args: &ExportArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let filters = super::filters(&args.filters)?;
    let tree = super::open_source(
        &args.source,
        args.subpath.as_deref(),
        crate::source::Needs::Blobs,
        args.cache_dir.as_deref(),
    )?;
    check_out(&args.out, tree.as_ref(), args.link)?;
    let out = prepare_out(&args.out, args.layout)?;
    let inventory = super::images_to_move(tree.as_ref(), &filters, args.untagged)?;
    note!(
        "ferry export: {} images from {} to {} ({} layout, --link {}{})",
        inventory.images.len(),
        tree.location().display(),
        out.display(),
        args.layout,
        args.link,
        if args.verify { ", verified" } else { "" }
    );
    for image in inventory.images.iter().filter(|i| !i.foreign.is_empty()) {
        note!(
            "{}: {} foreign layer(s) not exported (they are fetched from their URLs; skopeo copy to a registry skips them)",
            image.reference(),
            image.foreign.len()
        );
    }

    let ladder = Ladder::new(args.link, args.verify);
    let images = &inventory.images;
    let progress = Progress::new(
        "export",
        images.len() as u64,
        bytes_to_place(images, args.layout),
    );
    let stop = super::stop_switch();
    let order = engine::plan_order(images);
    let jobs = usize::from(args.jobs);
    let (mut run, files) = match args.layout {
        Layout::Dir => {
            let sink = DirLayout::new(out.clone(), tree.as_ref(), ladder);
            let run = engine::run(
                &Copy::new(&sink, tree.as_ref()),
                images,
                &order,
                jobs,
                &progress,
                &stop,
            );
            (run, sink.totals())
        }
        Layout::Oci => {
            let repositories = images.iter().map(|i| i.repository.clone());
            let sink = OciLayout::new(out.clone(), tree.as_ref(), ladder, repositories);
            let run = engine::run(
                &Copy::new(&sink, tree.as_ref()),
                images,
                &order,
                jobs,
                &progress,
                &stop,
            );
            (run, sink.totals())
        }
    };
    progress.finish();
    if let Some(Fatal::DiskFull { needed, .. }) = &mut run.stopped {
        *needed = Some(progress.bytes_total().saturating_sub(progress.bytes_done()));
    }
    let elapsed = progress.elapsed();
    let counts = CopyCounts::of(&run.outcomes);

    super::report_failures(&run.outcomes);
    let failed = run.failed_list();
    write_lines_file(&args.failed_list, &failed)?;
    if let Some(path) = &global.report {
        write_json_file(
            path,
            &ExportReport {
                command: "export",
                source: tree.location().display().to_string(),
                out: out.display().to_string(),
                layout: args.layout,
                link: args.link,
                verify: args.verify,
                elapsed_seconds: elapsed.as_secs_f64(),
                counts: &counts,
                files: &files,
                stopped: run.stopped.as_ref().map(Fatal::to_string),
                images: &run.outcomes,
            },
        )?;
    }
    note!("{}", summary(&counts, &files, elapsed));
    let outcome = super::finish_run("export", &failed, &args.failed_list, run.stopped.as_ref());
    Ok(super::with_source_problems(outcome, &inventory))
}

/// `out` made absolute with every folder that exists resolved (symlinks followed), and the deepest
/// such folder; nothing is created.
fn resolve_out(out: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let absolute = std::path::absolute(out)
        .with_context(|| format!("cannot resolve --out {}", out.display()))?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        let Some(parent) = existing.parent() else {
            break;
        };
        rest.push(existing.file_name().map(PathBuf::from).unwrap_or_default());
        existing = parent;
    }
    if rest
        .iter()
        .any(|p| p.components().any(|c| c == Component::ParentDir))
    {
        bail!(
            "--out {}: '..' after a folder that does not exist yet",
            out.display()
        );
    }
    let existing = std::fs::canonicalize(existing)
        .with_context(|| format!("cannot resolve --out {}", out.display()))?;
    let mut resolved = existing.clone();
    resolved.extend(rest.iter().rev());
    Ok((resolved, existing))
}

/// Refuses an output folder inside the source tree, and for `--link hard` one on another
/// filesystem (or a source inside an archive), before anything is created.
fn check_out(out: &Path, tree: &dyn Source, link: LinkMode) -> anyhow::Result<()> {
    let (resolved, existing) = resolve_out(out)?;
    let Some(root) = tree.folder() else {
        if matches!(link, LinkMode::Hard | LinkMode::Reflink) {
            bail!(
                "--link {link}: the blobs of {} are inside a tar archive, not files of their own, so they can only be copied; use --link copy or auto",
                tree.location().display()
            );
        }
        return Ok(());
    };
    if resolved.starts_with(root) {
        bail!(
            "refusing to export into {}: it is inside the source tree {} (ferry never writes into the source)",
            resolved.display(),
            root.display()
        );
    }
    if link == LinkMode::Hard {
        let source = [root.join("docker/registry/v2/blobs"), root.join("blobs")]
            .into_iter()
            .find(|b| b.is_dir())
            .unwrap_or_else(|| root.to_path_buf());
        let dev = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.dev())
                .with_context(|| format!("cannot read {}", p.display()))
        };
        if dev(&source)? != dev(&existing)? {
            bail!(
                "--link hard: {} and {} are on different filesystems, and hard links cannot cross filesystems; use --link auto (reflink or copy) or an output folder on the source's filesystem",
                source.display(),
                resolved.display()
            );
        }
    }
    Ok(())
}

/// Bytes the progress bar expects: each image's blobs per folder (dir), each blob once per repository (oci).
fn bytes_to_place(images: &[Image], layout: Layout) -> u64 {
    match layout {
        Layout::Dir => images.iter().map(Image::size).sum(),
        Layout::Oci => {
            let mut seen = HashSet::new();
            images
                .iter()
                .flat_map(|i| i.blobs.iter().map(move |b| (&i.repository, b)))
                .filter(|(repo, b)| seen.insert((repo.as_str(), b.digest)))
                .map(|(_, b)| b.size)
                .sum()
        }
    }
}

fn summary(c: &CopyCounts, f: &FileTotals, elapsed: Duration) -> String {
    format!(
        "images: {} exported, {} already there, {} failed{}; files: {} hard-linked, {} reflinked, {} copied, {} already right; {} written in {:.1} s",
        c.copied,
        c.skipped,
        c.failed,
        super::push::not_done(c),
        f.linked,
        f.reflinked,
        f.copied,
        f.present,
        HumanBytes(f.bytes_copied),
        elapsed.as_secs_f64()
    )
}
