//! `ferry verify`: hashes every byte the selected tags need and says, tag by tag, what is intact
//! and what is lost, and what else the tree holds.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::HumanBytes;
use serde::Serialize;

use super::Outcome;
use crate::cli::{GlobalArgs, VerifyArgs, VerifyFormat};
use crate::progress::Progress;
use crate::report::{write_json_file, write_lines_file};
use crate::source::survey::Survey;
use crate::verify::{self, Plan, ReadStrategy, Status, Verification};
use crate::{error, note};

/// Benchmarks set the read strategy through this variable (`read`, `read:<KiB>`, `mmap`).
const READ_VARIABLE: &str = "FERRY_VERIFY_READ";
/// Findings of one kind printed in the table; `--format json` lists them all.
const FINDINGS_SHOWN: usize = 20;

#[derive(Serialize)]
struct VerifyReport<'a> {
    command: &'static str,
    source: String,
    all_blobs: bool,
    untagged: bool,
    jobs: usize,
    read: String,
    elapsed_seconds: f64,
    hashing_seconds: f64,
    #[serde(flatten)]
    result: &'a Verification,
}

pub fn run(args: &VerifyArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let filters = super::filters(&args.filters)?;
    let read = match std::env::var(READ_VARIABLE) {
        Ok(v) => v
            .parse::<ReadStrategy>()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{READ_VARIABLE}={v}"))?,
        Err(_) => ReadStrategy::default(),
    };
    let tree = super::open_source(
        &args.source,
        args.subpath.as_deref(),
        crate::source::Needs::Blobs,
        args.cache_dir.as_deref(),
    )?;
    let survey = tree.v2_folder().map(Survey::of);
    if survey.is_none() {
        note!(
            "{} is not a storage tree folder: the tags are verified, but what lies beside them (orphan blobs, stray files) is not surveyed",
            tree.location().display()
        );
    }
    let options = verify::Options {
        untagged: args.untagged,
        all_blobs: args.all_blobs,
        jobs: usize::from(args.jobs),
        read,
    };
    let plan = Plan::new(tree.as_ref(), survey.as_ref(), &filters, options)?;
    let (files, bytes) = plan.to_hash();
    note!(
        "ferry verify: {} images in {}; hashing {files} blobs ({}) on {} threads",
        plan.images(),
        tree.location().display(),
        HumanBytes(bytes),
        args.jobs
    );
    crate::debug!("read strategy {read}");
    let progress = Progress::bytes_only("verify", bytes);
    let result = plan.run(&progress);
    progress.finish();
    let hashing = progress.elapsed();

    match args.format {
        VerifyFormat::Json => {
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            serde_json::to_writer_pretty(&mut out, &result)?;
            writeln!(out)?;
            out.flush()?;
        }
        VerifyFormat::Table if !crate::messages::quiet() => print_table(&result),
        VerifyFormat::Table => {}
    }
    if args.format == VerifyFormat::Json || crate::messages::quiet() {
        for image in result.images.iter().filter(|i| i.status == Status::Broken) {
            let problems: Vec<&str> = image.problems.iter().map(|p| p.message.as_str()).collect();
            error!("{}: {}", image.reference(), problems.join("; "));
        }
    }
    let failed: Vec<String> = result
        .images
        .iter()
        .filter(|i| i.status == Status::Broken)
        .map(|i| i.reference())
        .collect();
    write_lines_file(&args.failed_list, &failed)?;
    if let Some(path) = &global.report {
        write_json_file(
            path,
            &VerifyReport {
                command: "verify",
                source: tree.location().display().to_string(),
                all_blobs: args.all_blobs,
                untagged: args.untagged,
                jobs: usize::from(args.jobs),
                read: read.to_string(),
                elapsed_seconds: started.elapsed().as_secs_f64(),
                hashing_seconds: hashing.as_secs_f64(),
                result: &result,
            },
        )?;
    }
    note!("{}", summary(&result, hashing));
    if !failed.is_empty() {
        note!(
            "{} broken images listed in {}; the intact ones can move: ferry push|export ... --exclude or --images",
            failed.len(),
            args.failed_list.display()
        );
    }
    Ok(if result.all_intact() {
        Outcome::Done
    } else {
        Outcome::SomeFailed
    })
}

/// Every image with its status and problems, then the findings, on stderr.
fn print_table(result: &Verification) {
    let width = result
        .images
        .iter()
        .map(|i| i.reference().chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    crate::messages::eprint_line(&format!("{:<width$}  {:<12}  STATUS", "IMAGE", "DIGEST"));
    for image in &result.images {
        let digest = image
            .digest
            .map(|d| d.short())
            .unwrap_or_else(|| "-".to_string());
        let status = match image.status {
            Status::Ok => "ok",
            Status::Broken => "broken",
        };
        crate::messages::eprint_line(&format!(
            "{:<width$}  {digest:<12}  {status}",
            image.reference()
        ));
        for p in &image.problems {
            crate::messages::eprint_line(&format!("    {}: {}", p.kind, p.message));
        }
        for n in &image.notes {
            crate::messages::eprint_line(&format!("    note: {n}"));
        }
    }
    for (kind, count) in result.finding_counts() {
        crate::messages::eprint_line(&format!("{}:", kind.label(count)));
        for f in result
            .findings
            .iter()
            .filter(|f| f.kind == kind)
            .take(FINDINGS_SHOWN)
        {
            crate::messages::eprint_line(&format!("    {}", f.message));
        }
        if count > FINDINGS_SHOWN {
            crate::messages::eprint_line(&format!(
                "    ... and {} more (--format json lists them all)",
                count - FINDINGS_SHOWN
            ));
        }
    }
}

fn summary(result: &Verification, hashing: Duration) -> String {
    let tagged = result.images.iter().filter(|i| i.tag.is_some()).count();
    let untagged = result.images.len() - tagged;
    let broken = result
        .images
        .iter()
        .filter(|i| i.status == Status::Broken)
        .count();
    let mut s = format!("{tagged} tags");
    if untagged > 0 {
        s += &format!(" and {untagged} untagged manifests");
    }
    s += &format!(": {} intact, {broken} broken", result.images.len() - broken);
    let b = &result.blobs;
    let secs = hashing.as_secs_f64().max(0.001);
    s += &format!(
        "; {} blobs hashed ({} in {:.1} s, {}/s)",
        b.checked,
        HumanBytes(b.bytes),
        secs,
        HumanBytes((b.bytes as f64 / secs) as u64)
    );
    let damaged: Vec<String> = [
        (b.corrupt.len(), "corrupt"),
        (b.missing.len(), "missing"),
        (b.unreadable.len(), "unreadable"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if !damaged.is_empty() {
        s += &format!(": {}", damaged.join(", "));
    }
    let counts = result.finding_counts();
    if !counts.is_empty() {
        let found: Vec<String> = counts.iter().map(|(k, n)| k.label(*n)).collect();
        s += &format!("; found {}", found.join(", "));
    }
    s
}
