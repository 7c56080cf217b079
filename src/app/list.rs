//! `ferry list`: the inventory of a storage tree, as a table, JSON or an image list.

use std::io::{self, Write};

use indicatif::HumanBytes;
use serde::Serialize;

use super::Outcome;
use crate::cli::{GlobalArgs, ListArgs, ListFormat};
use crate::inventory::{Image, Inventory, InventoryOptions, Totals};
use crate::report::{ImageRecord, write_json_file};
use crate::source::Upload;
use crate::{note, warn};

#[derive(Serialize)]
struct ListReport<'a> {
    command: &'static str,
    source: String,
    totals: Totals,
    images: Records<'a>,
    unfinished_uploads: &'a [Upload],
    problems: Vec<String>,
}

pub fn run(args: &ListArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let filters = super::filters(&args.filters)?;
    let tree = super::open_source(
        &args.source,
        args.subpath.as_deref(),
        crate::source::Needs::Metadata,
        None,
    )?;
    let inventory = Inventory::build(
        tree.as_ref(),
        &filters,
        InventoryOptions {
            untagged: args.untagged,
            config_platforms: args.format != ListFormat::Images,
        },
    )?;
    let records = Records(&inventory.images);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match args.format {
        ListFormat::Table => write_table(&mut out, &inventory.images)?,
        ListFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &records)?;
            writeln!(out)?;
        }
        ListFormat::Images => {
            for image in &inventory.images {
                writeln!(out, "{}", image.reference())?;
            }
        }
    }
    out.flush()?;
    for image in inventory.images.iter().filter(|i| !i.is_ok()) {
        warn!("{}: {}", image.reference(), image.problem_summary());
    }
    for problem in &inventory.problems {
        warn!("{problem}");
    }
    for upload in &inventory.uploads {
        note!(
            "unfinished upload in {} ({}, {}): not an image, left alone",
            upload.repository,
            upload.path.display(),
            HumanBytes(upload.bytes)
        );
    }
    let totals = inventory.totals();
    note!("{}", summary(&totals, inventory.uploads.len()));
    if let Some(path) = &global.report {
        write_json_file(
            path,
            &ListReport {
                command: "list",
                source: tree.location().display().to_string(),
                totals,
                images: records,
                unfinished_uploads: &inventory.uploads,
                problems: inventory.problems.iter().map(|p| p.to_string()).collect(),
            },
        )?;
    }
    Ok(if totals.broken > 0 || !inventory.problems.is_empty() {
        Outcome::SomeFailed
    } else {
        Outcome::Done
    })
}

/// The images as JSON rows, each made as it is written (a million rows are never all in memory).
#[derive(Clone, Copy)]
struct Records<'a>(&'a [Image]);

impl Serialize for Records<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ImageRecord::from))
    }
}

fn summary(t: &Totals, uploads: usize) -> String {
    let mut s = format!("{} repositories, {} tags", t.repositories, t.tags);
    if t.untagged > 0 {
        s += &format!(", {} untagged", t.untagged);
    }
    s += &format!(
        ", {} distinct manifests; {} referenced, {} unique",
        t.manifests,
        HumanBytes(t.logical_bytes),
        HumanBytes(t.unique_bytes)
    );
    if t.broken > 0 {
        s += &format!("; {} broken", t.broken);
    }
    if uploads > 0 {
        let plural = if uploads == 1 { "" } else { "s" };
        s += &format!("; {uploads} unfinished upload{plural}");
    }
    s
}

/// The table's cells for one image.
fn row(image: &Image) -> [String; 7] {
    let r = ImageRecord::from(image);
    [
        r.repository,
        r.tag.unwrap_or_else(|| "<none>".into()),
        r.digest
            .as_deref()
            .map(|d| d.trim_start_matches("sha256:")[..12].to_string())
            .unwrap_or_else(|| "-".into()),
        r.kind.unwrap_or("-").to_string(),
        if r.platforms.is_empty() {
            "-".to_string()
        } else {
            r.platforms
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        },
        HumanBytes(r.size).to_string(),
        r.status.to_string(),
    ]
}

/// Writes the table in two passes over the images (widths, then rows), holding one row at a time.
fn write_table(out: &mut impl Write, images: &[Image]) -> io::Result<()> {
    let header = [
        "REPOSITORY",
        "TAG",
        "DIGEST",
        "TYPE",
        "PLATFORMS",
        "SIZE",
        "STATUS",
    ];
    let mut widths = header.map(str::len);
    for image in images {
        for (w, cell) in widths.iter_mut().zip(row(image)) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[&str]| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &header)?;
    for image in images {
        line(out, &row(image).each_ref().map(String::as_str))?;
    }
    Ok(())
}
