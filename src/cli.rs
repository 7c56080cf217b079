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
    /// Export images as skopeo dir: folders or OCI layouts, by hard link where possible.
    Export(ExportArgs),
    /// Push images to Harbor or any OCI registry, digests unchanged, each blob sent once.
    Push(PushArgs),
    /// Prove the destination holds every selected tag: digests, index children, every blob.
    Validate(ValidateArgs),
    /// Show or remove the folders compressed archives were extracted into.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Hash every blob the selected tags need and say, tag by tag, what is intact and what is lost.
    Verify(VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the cache folders: the archive each came from, whether it is complete, its size.
    List(CacheArgs),
    /// Remove cache folders: those of the ARCHIVEs given, or all of them.
    Clean(CacheCleanArgs),
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    /// The cache folder base (default: the user cache folder, ~/.cache/ferry).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CacheCleanArgs {
    /// Only the cache folders of these archives.
    #[arg(value_name = "ARCHIVE")]
    pub archives: Vec<PathBuf>,
    #[command(flatten)]
    pub cache: CacheArgs,
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
    /// Storage tree: the root, its docker/ or docker/registry/v2/ folder, a tar/tar.gz/tar.zst/tar.xz of one, or a folder of dir:/OCI layouts.
    pub source: PathBuf,
    /// Where the storage tree is inside SOURCE, when SOURCE holds more than one.
    #[arg(long, value_name = "PATH")]
    pub subpath: Option<String>,
    /// Also list manifests that no tag points at.
    #[arg(long)]
    pub untagged: bool,
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    #[command(flatten, next_help_heading = "Filters")]
    pub filters: FilterArgs,
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

/// One of N processes sharing a tree (N machines, or the pods of a Kubernetes Indexed Job).
#[derive(Debug, Args, Clone, Default)]
pub struct ShardArgs {
    /// Take only the repositories whose name hashes to K of N (0 <= K < N); `auto/N` or `auto` takes K from JOB_COMPLETION_INDEX (set in each pod of a Kubernetes Indexed Job).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<crate::shard::ShardArg>,
    /// N for `--shard auto`.
    #[arg(long, value_name = "N", requires = "shard", value_parser = clap::value_parser!(u64).range(1..))]
    pub shards: Option<u64>,
}

/// How source repositories map to destination repositories.
#[derive(Debug, Args, Clone)]
pub struct MappingArgs {
    /// Project for single-component names (`alpine` → `NAME/alpine`).
    #[arg(long, value_name = "NAME", default_value = "library")]
    pub default_project: String,
    /// Put everything under NAME: `NAME/<full source path>`.
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
}

/// How to reach and authenticate to the destination registry.
#[derive(Debug, Args, Clone)]
pub struct RegistryArgs {
    /// Destination registry: host[:port] or a URL (http:// for plain HTTP).
    #[arg(short = 'd', long = "destination", value_name = "REGISTRY")]
    pub destination: String,
    /// Verify the registry's TLS certificate; `--tls-verify=false` also allows plain HTTP.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: bool,
    /// Trust the CA certificates (PEM) in FILE for the registry.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Registry user (password from --password-stdin or FERRY_PASSWORD).
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Credentials file (containers auth.json or docker config.json format).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Retries of a failed request (connection errors, 5xx, 408, 429), with backoff.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Seconds without progress (connecting, reading, writing) before a request is given up and
    /// retried; a destination that stays silent ends the run. Large uploads are never cut by time.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Storage tree: the root, its docker/ or docker/registry/v2/ folder, a tar/tar.gz/tar.zst/tar.xz of one, or a folder of dir:/OCI layouts.
    pub source: PathBuf,
    /// Where the storage tree is inside SOURCE, when SOURCE holds more than one.
    #[arg(long, value_name = "PATH")]
    pub subpath: Option<String>,
    /// Where compressed archives are extracted (default: the user cache folder, ~/.cache/ferry).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Parallel pushes (1–32).
    #[arg(short = 'j', long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub jobs: u16,
    /// Check the destination and print the plan; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Failed list: source repo:tag per line, for --images.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        default_value = "push-failed.txt"
    )]
    pub failed_list: PathBuf,
    /// Do not create missing Harbor projects.
    #[arg(long)]
    pub no_create_projects: bool,
    /// Also push manifests no tag points at (by digest).
    #[arg(long)]
    pub untagged: bool,
    /// Hash each source blob before it is mounted or found present (an upload is hashed anyway).
    #[arg(long)]
    pub verify: bool,
    #[command(flatten, next_help_heading = "Destination")]
    pub registry: RegistryArgs,
    #[command(flatten, next_help_heading = "Mapping")]
    pub mapping: MappingArgs,
    #[command(flatten, next_help_heading = "Filters")]
    pub filters: FilterArgs,
    #[command(flatten, next_help_heading = "Sharding")]
    pub shard: ShardArgs,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Storage tree: the root, its docker/ or docker/registry/v2/ folder, a tar/tar.gz/tar.zst/tar.xz of one, or a folder of dir:/OCI layouts.
    pub source: PathBuf,
    /// Where the storage tree is inside SOURCE, when SOURCE holds more than one.
    #[arg(long, value_name = "PATH")]
    pub subpath: Option<String>,
    /// Parallel checks (1–32).
    #[arg(short = 'j', long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub jobs: u16,
    /// Failed list: source repo:tag per line, for `ferry push --images`.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        default_value = "validate-failed.txt"
    )]
    pub failed_list: PathBuf,
    /// Only index entries of these architectures, comma-separated (`arm/v7` names a variant); default all.
    #[arg(
        short = 'a',
        long = "arch",
        value_name = "ARCHES",
        value_delimiter = ','
    )]
    pub arch: Vec<String>,
    /// Only index entries of these operating systems, comma-separated; default all.
    #[arg(long = "os", value_name = "OSES", value_delimiter = ',')]
    pub os: Vec<String>,
    /// Check tags and index children only, not every blob.
    #[arg(long)]
    pub shallow: bool,
    #[arg(long, value_enum, default_value_t = ValidateFormat::Table)]
    pub format: ValidateFormat,
    #[command(flatten, next_help_heading = "Destination")]
    pub registry: RegistryArgs,
    #[command(flatten, next_help_heading = "Mapping")]
    pub mapping: MappingArgs,
    #[command(flatten, next_help_heading = "Filters")]
    pub filters: FilterArgs,
    #[command(flatten, next_help_heading = "Sharding")]
    pub shard: ShardArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    /// The tags that did not pass, one line per reason, on stdout.
    Table,
    /// Every tag's verdict as a JSON array on stdout.
    Json,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Storage tree: the root, its docker/ or docker/registry/v2/ folder, a tar/tar.gz/tar.zst/tar.xz of one, or a folder of dir:/OCI layouts.
    pub source: PathBuf,
    /// Where the storage tree is inside SOURCE, when SOURCE holds more than one.
    #[arg(long, value_name = "PATH")]
    pub subpath: Option<String>,
    /// Where compressed archives are extracted (default: the user cache folder, ~/.cache/ferry).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Output folder: new, empty, or an earlier export of the same layout (completed, not erased).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// dir: DIR/<repo>:<tag>/ skopeo dir: folders; oci: an OCI image layout per repository.
    #[arg(long, value_enum, default_value_t = crate::sink::layout::Layout::Dir)]
    pub layout: crate::sink::layout::Layout,
    /// How blob files get there: hard link, else reflink, else copy (auto), or only one of them.
    #[arg(long, value_enum, default_value_t = crate::sink::link::LinkMode::Auto)]
    pub link: crate::sink::link::LinkMode,
    /// Parallel exports (1–32).
    #[arg(short = 'j', long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub jobs: u16,
    /// Failed list: source repo:tag per line, for --images.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        default_value = "export-failed.txt"
    )]
    pub failed_list: PathBuf,
    /// Hash every blob before hard-linking or reflinking it (a link passes corruption on).
    #[arg(long)]
    pub verify: bool,
    /// Also export manifests no tag points at, as DIR/<repo>@sha256:<hex>/ (OCI: index entries without a ref name).
    #[arg(long)]
    pub untagged: bool,
    #[command(flatten, next_help_heading = "Filters")]
    pub filters: FilterArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Storage tree: the root, its docker/ or docker/registry/v2/ folder, a tar/tar.gz/tar.zst/tar.xz of one, or a folder of dir:/OCI layouts.
    pub source: PathBuf,
    /// Where the storage tree is inside SOURCE, when SOURCE holds more than one.
    #[arg(long, value_name = "PATH")]
    pub subpath: Option<String>,
    /// Where compressed archives are extracted (default: the user cache folder, ~/.cache/ferry).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Threads hashing at once (default: one per CPU).
    #[arg(short = 'j', long, value_name = "N", default_value_t = default_hash_jobs(), value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    #[arg(long, value_enum, default_value_t = VerifyFormat::Table)]
    pub format: VerifyFormat,
    /// Hash every blob under blobs/, referenced or not.
    #[arg(long)]
    pub all_blobs: bool,
    /// Also check manifests no tag points at, as repo@digest images.
    #[arg(long)]
    pub untagged: bool,
    /// Failed list: the broken images, one repo:tag per line.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        default_value = "verify-failed.txt"
    )]
    pub failed_list: PathBuf,
    #[command(flatten, next_help_heading = "Filters")]
    pub filters: FilterArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyFormat {
    /// Every image and finding as a table on stderr.
    Table,
    /// One JSON document on stdout: images, blobs, findings.
    Json,
}

/// One hashing thread per CPU.
fn default_hash_jobs() -> u16 {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 256) as u16
}
