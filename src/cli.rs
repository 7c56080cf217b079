//! Command-line flags as typed (no I/O here); `app` resolves them into what a run needs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Move container images out of a Docker Distribution storage tree into Harbor or any OCI registry",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log every step (never secrets) to stderr.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Print only errors.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Write a JSON report of every outcome to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inventory of a storage tree: repositories, tags, digests, platforms, sizes (no network).
    List(ListArgs),
}

/// Which images to work on; every given filter must agree.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only repositories matching GLOB (repeatable; `*` stays within one path component, `**` crosses).
    #[arg(long = "repo", value_name = "GLOB")]
    pub repos: Vec<String>,
    /// Skip repositories matching GLOB, or `repo:tag` when GLOB has a `:` (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Only tags matching GLOB (repeatable).
    #[arg(long = "tag", value_name = "GLOB")]
    pub tags: Vec<String>,
    /// Only the images listed in FILE, one `repo:tag` per line (a failed list works).
    #[arg(long, value_name = "FILE")]
    pub images: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Storage tree: the root, its docker/ folder, or its docker/registry/v2/ folder.
    pub source: PathBuf,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Also list manifests that no tag points at.
    #[arg(long)]
    pub untagged: bool,
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Aligned columns for people.
    Table,
    /// A JSON array on stdout.
    Json,
    /// One `repo:tag` per line (the `--images` format).
    Images,
}
