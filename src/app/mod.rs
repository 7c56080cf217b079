//! Subcommands: one thin file each, turning resolved flags into a run and an `Outcome`.

pub mod export;
pub mod list;
pub mod push;
pub mod validate;
pub mod verify;

use std::path::Path;

use anyhow::Context;

use crate::cli::{Cli, Command, FilterArgs, MappingArgs, RegistryArgs};
use crate::destination::Mapping;
use crate::filter::{Filters, read_image_list};
use crate::inventory::{Inventory, InventoryOptions};
use crate::registry::credentials::read_password_stdin;
use crate::registry::{Client, ClientOptions, CredentialOptions, Endpoint};
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
        Command::Push(args) => push::run(&args, &cli.global),
        Command::Validate(args) => validate::run(&args, &cli.global),
        Command::Export(args) => export::run(&args, &cli.global),
        Command::Verify(args) => verify::run(&args, &cli.global),
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

/// Resolves the destination, its credentials and TLS options, and connects (ping + credential check).
pub fn connect(args: &RegistryArgs, jobs: usize) -> anyhow::Result<Client> {
    let endpoint = Endpoint::parse(&args.destination, args.tls_verify)?;
    let mut options = CredentialOptions::from_env();
    options.username = args.username.clone();
    options.authfile = args.authfile.clone();
    if args.password_stdin {
        options.password = Some(read_password_stdin(std::io::stdin())?);
    }
    let credentials = options.resolve(&endpoint.host)?;
    if let Some((c, source)) = &credentials {
        crate::debug!(
            "credentials for {}: user {} from {source}",
            endpoint.host,
            c.username
        );
    }
    let host = endpoint.host.clone();
    Client::connect(ClientOptions {
        endpoint,
        tls_verify: args.tls_verify,
        ca_cert: args.ca_cert.clone(),
        credentials,
        retries: args.retries,
        connections: jobs,
    })
    .with_context(|| format!("cannot use destination {host}"))
}

/// The destination mapping the flags ask for (push and validate must agree on it).
pub fn mapping(args: &MappingArgs) -> Mapping {
    Mapping {
        default_project: args.default_project.clone(),
        project: args.project.clone(),
    }
}

/// The selected images of a tree for a copy or a check (no config reads), with tree-level
/// problems reported as warnings.
pub fn images_to_move(
    tree: &StorageTree,
    filters: &Filters,
    untagged: bool,
) -> anyhow::Result<Inventory> {
    let inventory = Inventory::build(
        tree,
        filters,
        InventoryOptions {
            untagged,
            config_platforms: false,
        },
    )?;
    for problem in &inventory.problems {
        crate::warn!("{problem}");
    }
    Ok(inventory)
}

/// The end of a copy run: points at the failed list, turns a stop into exit 2, else 0 or 1.
pub fn finish_run(
    verb: &str,
    failed: &[String],
    failed_list: &Path,
    fatal: Option<String>,
) -> anyhow::Result<Outcome> {
    if !failed.is_empty() {
        crate::note!(
            "{} failed images listed in {} (retry with --images {})",
            failed.len(),
            failed_list.display(),
            failed_list.display()
        );
    }
    if let Some(fatal) = fatal {
        anyhow::bail!("{verb} stopped: {fatal}");
    }
    Ok(if failed.is_empty() {
        Outcome::Done
    } else {
        Outcome::SomeFailed
    })
}
