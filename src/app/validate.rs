//! `ferry validate`: did every selected tag arrive at the destination, intact? Failed tags go to a list `push --images` takes.

use std::io::{self, Write};

use anyhow::Context;
use serde::Serialize;

use super::Outcome;
use crate::cli::{GlobalArgs, ValidateArgs, ValidateFormat};
use crate::engine::{self, Fatal};
use crate::preflight::{self, Need, Preflight};
use crate::progress::Progress;
use crate::report::{RetryTotals, write_json_file, write_lines_file};
use crate::validate::{Checker, Counts, Options, PlatformSelection, Status, Verdict};
use crate::{error, note, warn};

#[derive(Serialize)]
struct ValidateReport<'a> {
    command: &'static str,
    source: String,
    destination: &'a str,
    /// Harbor's version (systeminfo), when it says.
    harbor_version: Option<&'a str>,
    platforms: String,
    shallow: bool,
    shard: Option<String>,
    elapsed_seconds: f64,
    requests: usize,
    counts: &'a Counts,
    /// Requests retried: in all, and those of no one tag (each tag's are in its record).
    retries: RetryTotals,
    /// Why the run stopped early, when it did.
    stopped: Option<String>,
    images: &'a [Verdict],
}

pub fn run(args: &ValidateArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let shard = super::shard(&args.shard)?;
    let filters = super::filters(&args.filters)?.with_shard(shard.map(|(s, _)| s));
    let platforms = PlatformSelection::new(&args.arch, &args.os)?;
    let tree = super::open_source(
        &args.source,
        args.subpath.as_deref(),
        crate::source::Needs::Metadata,
        None,
    )?;
    let jobs = usize::from(args.jobs);
    let stop = super::stop_switch();
    let destination = super::connect(&args.registry, jobs, &stop, false)?;
    let client = &destination.client;
    let harbor = destination.harbor.as_ref();
    let mapping = super::mapping(&args.mapping);
    let inventory = super::images_to_move(tree.as_ref(), &filters, false)?;
    note!(
        "ferry validate: {} tags from {} against {}{} ({}{}{})",
        inventory.images.len(),
        tree.location().display(),
        client.base(),
        if harbor.is_some() { " (Harbor)" } else { "" },
        platforms,
        if args.shallow { ", shallow" } else { "" },
        shard
            .map(|(s, _)| format!(", shard {s}"))
            .unwrap_or_default()
    );
    let preflight = match harbor {
        Some(h) => {
            note!(
                "Harbor {}, signed in as {}",
                h.version.as_deref().unwrap_or("(version not shown)"),
                h.account
            );
            preflight::check(client, &inventory.images, &mapping, Need::Pull)
                .with_context(|| format!("cannot use destination {}", client.host()))?
        }
        None => Preflight::default(),
    };
    preflight.tell();
    let totals = inventory.totals();
    let progress = Progress::new(
        "validate",
        inventory.images.len() as u64,
        totals.logical_bytes,
    );
    let options = Options {
        shallow: args.shallow,
        platforms: platforms.clone(),
        harbor: harbor.is_some(),
        closed: preflight.projects().closed,
    };
    let checker = Checker::new(client, tree.as_ref(), mapping, options);
    let images = &inventory.images;
    let run = engine::run(
        &checker,
        images,
        &engine::in_order(images),
        jobs,
        &progress,
        &stop,
    );
    progress.finish();
    let elapsed = progress.elapsed();
    let counts = Counts::of(&run.outcomes);
    let requests = checker.requests();
    let retries = RetryTotals::new(client.retries(), run.outcomes.iter().map(|v| v.retries));

    match args.format {
        ValidateFormat::Json => {
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            serde_json::to_writer_pretty(&mut out, &run.outcomes)?;
            writeln!(out)?;
            out.flush()?;
        }
        ValidateFormat::Table => write_table(&run.outcomes)?,
    }
    for v in &run.outcomes {
        if v.status == Status::SourceProblem {
            warn!("{}: {}", v.source, v.summary());
        }
        for n in &v.notes {
            note!("{}: {n}", v.source);
        }
        if v.status == Status::Fail
            && let Some(specs) = &v.specs
        {
            // Hangar's FAQ shows these two blocks; users of mirror-validate know how to read them.
            error!(
                "{} srcSpec: {}",
                v.source,
                serde_json::to_string_pretty(&specs.source)?
            );
            error!(
                "{} dstSpec: {}",
                v.source,
                serde_json::to_string_pretty(&specs.dest)?
            );
        }
    }
    let failed = run.failed_list();
    write_lines_file(&args.failed_list, &failed)?;
    if let Some(path) = &global.report {
        write_json_file(
            path,
            &ValidateReport {
                command: "validate",
                source: tree.location().display().to_string(),
                destination: client.base(),
                harbor_version: harbor.and_then(|h| h.version.as_deref()),
                platforms: platforms.to_string(),
                shallow: args.shallow,
                shard: shard.map(|(s, _)| s.to_string()),
                elapsed_seconds: elapsed.as_secs_f64(),
                requests,
                counts: &counts,
                retries,
                stopped: run.stopped.as_ref().map(Fatal::to_string),
                images: &run.outcomes,
            },
        )?;
    }
    note!(
        "{}; {} retries",
        summary(&counts, requests, elapsed),
        retries.total
    );
    if counts.source_problems > 0 {
        note!(
            "{} tags have source problems (not in the failed list: pushing cannot fix them; `ferry list` shows them)",
            counts.source_problems
        );
    }
    let outcome = super::finish_run("validate", &failed, &args.failed_list, run.stopped.as_ref());
    let outcome = match outcome {
        Outcome::Stopped { .. } => outcome,
        _ if counts.passed == counts.tags => Outcome::Done,
        _ => Outcome::SomeFailed,
    };
    Ok(super::with_source_problems(outcome, &inventory))
}

/// The tags that did not pass: one line per reason, aligned.
fn write_table(verdicts: &[Verdict]) -> io::Result<()> {
    let mut rows: Vec<[String; 4]> = Vec::new();
    for v in verdicts.iter().filter(|v| v.status != Status::Pass) {
        let target = v.target.clone().unwrap_or_else(|| "-".into());
        let status = match v.status {
            Status::Fail => "FAIL",
            Status::SourceProblem => "SOURCE",
            Status::NotChecked => "NOT-CHECKED",
            Status::Pass => "ok",
        };
        let reasons: Vec<String> = match v.status {
            Status::Fail => v.reasons.iter().map(|r| r.to_string()).collect(),
            _ => vec![v.summary()],
        };
        for reason in reasons {
            rows.push([v.source.clone(), target.clone(), status.to_string(), reason]);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let header = ["SOURCE", "DESTINATION", "RESULT", "REASON"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut line = |cells: [&str; 4]| -> io::Result<()> {
        writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
    };
    line(header)?;
    for row in &rows {
        line(row.each_ref().map(String::as_str))?;
    }
    out.flush()
}

fn summary(c: &Counts, requests: usize, elapsed: std::time::Duration) -> String {
    let mut s = format!(
        "tags: {} checked, {} passed, {} failed",
        c.tags, c.passed, c.failed
    );
    if c.source_problems > 0 {
        s += &format!(", {} source problems", c.source_problems);
    }
    if c.not_checked > 0 {
        s += &format!(", {} not checked", c.not_checked);
    }
    if !c.reasons.is_empty() {
        let kinds: Vec<String> = c.reasons.iter().map(|(k, n)| format!("{k} {n}")).collect();
        s += &format!(" ({})", kinds.join(", "));
    }
    s += &format!(
        "; {} child manifests and {} blobs confirmed; {requests} requests in {:.1} s",
        c.manifests_checked,
        c.blobs_checked,
        elapsed.as_secs_f64()
    );
    s
}
