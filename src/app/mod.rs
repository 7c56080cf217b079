//! Subcommands: one thin file each, turning resolved flags into a run and an `Outcome`.

pub mod cache;
pub mod export;
pub mod list;
pub mod push;
pub mod validate;
pub mod verify;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{Cli, Command, FilterArgs, MappingArgs, RegistryArgs, ShardArgs};
use crate::destination::Mapping;
use crate::engine::{Failure, Fatal, ImageOutcome, ImageStatus, Stop};
use crate::filter::{Filters, read_image_list};
use crate::inventory::{Inventory, InventoryOptions};
use crate::preflight::Harbor;
use crate::registry::credentials::read_password_stdin;
use crate::registry::harbor::{self, Account};
use crate::registry::{Client, ClientOptions, CredentialOptions, Endpoint};
use crate::shard::{self, IndexFrom, Shard};
use crate::source::{Needs, OpenOptions, Source};

/// How a run ended when it could run at all (errors before it could start are exit 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything selected was done (exit 0).
    Done,
    /// Some images failed; they are named in the failed list or output (exit 1).
    SomeFailed,
    /// The run stopped early; the cause was said once (exit 2, or 128 + signal).
    Stopped { code: u8 },
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::SomeFailed => 1,
            Outcome::Stopped { code } => code,
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    crate::messages::init(cli.global.quiet, cli.global.debug);
    match cli.command {
        Command::List(args) => list::run(&args, &cli.global),
        Command::Push(args) => push::run(&args, &cli.global),
        Command::Validate(args) => validate::run(&args, &cli.global),
        Command::Export(args) => export::run(&args, &cli.global),
        Command::Cache(command) => cache::run(&command),
        Command::Verify(args) => verify::run(&args, &cli.global),
    }
}

/// Builds the filters, reading `--images` if given.
pub fn filters(args: &FilterArgs) -> anyhow::Result<Filters> {
    let images = args.images.as_deref().map(read_image_list).transpose()?;
    Filters::new(&args.repos, &args.exclude, &args.tags, images)
}

/// The shard `--shard`/`--shards` ask for, K read from `JOB_COMPLETION_INDEX` for `--shard auto`.
pub fn shard(args: &ShardArgs) -> anyhow::Result<Option<(Shard, IndexFrom)>> {
    let env = std::env::var_os(shard::INDEX_VARIABLE).map(|v| v.to_string_lossy().into_owned());
    let resolved =
        shard::resolve(args.shard, args.shards, env.as_deref()).map_err(anyhow::Error::msg)?;
    if let Some((s, IndexFrom::Environment)) = resolved {
        crate::debug!("shard {s}: K from {}", shard::INDEX_VARIABLE);
    }
    Ok(resolved)
}

/// Opens SOURCE (a storage tree folder, a tar or compressed tar of one, a folder of layouts)
/// for a command that needs `needs` of it.
pub fn open_source(
    path: &Path,
    subpath: Option<&str>,
    needs: Needs,
    cache_dir: Option<&Path>,
) -> anyhow::Result<Box<dyn Source>> {
    let options = OpenOptions {
        subpath,
        needs,
        cache_dir,
    };
    crate::source::open(path, &options)
        .with_context(|| format!("cannot use source {}", path.display()))
}

/// The run's stop switch, with SIGINT/SIGTERM wired to it.
pub fn stop_switch() -> Stop {
    let stop = Stop::new();
    if let Err(e) = stop.on_signals() {
        crate::warn!(
            "cannot catch SIGINT/SIGTERM ({e}); an interrupted run will not write its failed list"
        );
    }
    stop
}

/// A connected destination, and what Harbor said about itself when it is Harbor.
pub struct Destination {
    pub client: Client,
    pub harbor: Option<Harbor>,
}

/// Resolves the destination, its credentials and TLS options, connects (ping), and checks the
/// credentials once: for Harbor through `users/current` (a wrong robot secret counts as
/// anonymous there), elsewhere with a token without scope. `push` needs an account.
pub fn connect(
    args: &RegistryArgs,
    jobs: usize,
    stop: &Stop,
    push: bool,
) -> anyhow::Result<Destination> {
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
    let cannot = || format!("cannot use destination {host}");
    let client = Client::connect(ClientOptions {
        endpoint,
        tls_verify: args.tls_verify,
        ca_cert: args.ca_cert.clone(),
        credentials,
        retries: args.retries,
        timeout: Duration::from_secs(args.timeout.max(1)),
        connections: jobs,
        stop: stop.clone(),
    })
    .with_context(cannot)?;
    if !harbor::detect(&client) {
        client.check_credentials().with_context(cannot)?;
        return Ok(Destination {
            client,
            harbor: None,
        });
    }
    let account = harbor::account(&client).with_context(cannot)?;
    match &account {
        Account::Anonymous if client.has_credentials() => anyhow::bail!(
            "{}: Harbor does not accept the credentials of {}: GET /api/v2.0/users/current answered 401 (Harbor takes a wrong, expired or disabled robot secret for anonymous)",
            cannot(),
            client.who()
        ),
        Account::Anonymous if push => anyhow::bail!(
            "{}: Harbor needs credentials to push: pass --username with --password-stdin, set FERRY_USERNAME/FERRY_PASSWORD, or use --authfile",
            cannot()
        ),
        Account::Unknown { status } => {
            crate::debug!(
                "GET /api/v2.0/users/current answered {status}; checking the credentials with a token"
            );
            client.check_credentials().with_context(cannot)?;
        }
        _ => {}
    }
    let version = harbor::version(&client);
    Ok(Destination {
        client,
        harbor: Some(Harbor { version, account }),
    })
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
    tree: &dyn Source,
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

/// Problems of the source that belong to no image (archive damage, refused members, unreadable
/// folders) make a run's exit code 1 as well: something may be missing from what it worked on.
pub fn with_source_problems(outcome: Outcome, inventory: &Inventory) -> Outcome {
    if inventory.problems.is_empty() || matches!(outcome, Outcome::Stopped { .. }) {
        return outcome;
    }
    crate::note!(
        "{} source problems (named above): what they hide was not worked on",
        inventory.problems.len()
    );
    Outcome::SomeFailed
}

/// The end of a run: points at the failed list, says once why the run stopped, and gives the
/// exit code (0 all done, 1 some failed, 2 or 128 + signal when it stopped).
pub fn finish_run(
    verb: &str,
    failed: &[String],
    failed_list: &Path,
    stopped: Option<&Fatal>,
) -> Outcome {
    if !failed.is_empty() {
        crate::note!(
            "{} images listed in {} (retry them with --images {})",
            failed.len(),
            failed_list.display(),
            failed_list.display()
        );
    }
    if let Some(cause) = stopped {
        crate::error!("{verb} stopped: {cause}");
        return Outcome::Stopped {
            code: cause.exit_code(),
        };
    }
    if failed.is_empty() {
        Outcome::Done
    } else {
        Outcome::SomeFailed
    }
}

/// One error line per image that failed on its own; images the run stopped before or during
/// are counted in one line each (their cause is said once, by `finish_run`).
pub fn report_failures(outcomes: &[ImageOutcome]) {
    let (mut not_done, mut cut) = (0, 0);
    for image in outcomes {
        match &image.status {
            ImageStatus::Failed(f) if matches!(**f, Failure::Stopped(_)) => cut += 1,
            ImageStatus::Failed(reason) => match &image.target {
                Some(t) => crate::error!("{} → {t}: {reason}", image.source),
                None => crate::error!("{}: {reason}", image.source),
            },
            ImageStatus::NotDone(_) => not_done += 1,
            ImageStatus::Copied | ImageStatus::Skipped => {}
        }
    }
    if cut > 0 {
        crate::note!("{cut} images were in progress when the run stopped");
    }
    if not_done > 0 {
        crate::note!("{not_done} images not attempted: the run stopped first");
    }
}
