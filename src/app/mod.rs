//! Subcommands: one thin file each, turning resolved flags into a run and an `Outcome`.

pub mod list;

use std::path::Path;

use anyhow::Context;

use crate::cli::{Cli, Command, FilterArgs};
use crate::filter::{Filters, read_image_list};
use crate::source::StorageTree;

/// How a run ended when it could run at all (exit 0 or 1; errors are exit 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything selected was done.
    Done,
    /// Some images failed; they are named in the failed list or output.
    SomeFailed,
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    crate::messages::init(cli.global.quiet, cli.global.debug);
    match cli.command {
        Command::List(args) => list::run(&args, &cli.global),
    }
}

/// Builds the filters, reading `--images` if given.
pub fn filters(args: &FilterArgs) -> anyhow::Result<Filters> {
    let images = args.images.as_deref().map(read_image_list).transpose()?;
    Filters::new(&args.repos, &args.exclude, &args.tags, images)
}

/// Opens SOURCE as a storage tree.
pub fn open_source(path: &Path) -> anyhow::Result<StorageTree> {
    StorageTree::open(path).with_context(|| format!("cannot use source {}", path.display()))
}
