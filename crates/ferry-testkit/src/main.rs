//! The `ferry-testkit` command: generates a storage tree and its truth file with a real registry.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use ferry_testkit::{
    BulkSpec, Registry, RegistryConfig, Truth, check_tree, generate_bulk, generate_standard, tree,
};

#[derive(Parser)]
#[command(
    name = "ferry-testkit",
    about = "Storage trees written by a real docker-registry, for ferry's tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a registry, push a scenario, stop it and keep its storage tree in DIR
    /// (truth in DIR.truth.json).
    Generate(GenerateArgs),
    /// Check that a storage tree holds what its truth file says (DIR.truth.json by default).
    Check {
        /// The storage root (the folder containing docker/registry/v2).
        #[arg(long, value_name = "DIR")]
        tree: PathBuf,
        #[arg(long, value_name = "FILE")]
        truth: Option<PathBuf>,
    },
    /// A counting proxy in front of a registry (for benchmarks): `GET <proxy>/_testkit/counts`
    /// answers upload sessions, mounts, completed uploads and blob bytes so far, as JSON.
    /// Runs until killed, or for --seconds at most.
    Proxy {
        /// The registry's base URL (http://127.0.0.1:PORT).
        #[arg(long, value_name = "URL")]
        backend: String,
        /// Where to write the proxy's 127.0.0.1:PORT once it listens.
        #[arg(long, value_name = "FILE")]
        addr_file: PathBuf,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 7200)]
        seconds: u64,
    },
    /// Benchmark floor: upload every unique config/layer blob of a tree's truth once (POST + PUT,
    /// streamed from its file, no HEAD, no hashing, no manifests) into one repository.
    UploadFloor {
        /// The storage root (the folder containing docker/registry/v2).
        #[arg(long, value_name = "DIR")]
        tree: PathBuf,
        /// Truth file [default: DIR.truth.json].
        #[arg(long, value_name = "FILE")]
        truth: Option<PathBuf>,
        /// Registry base URL (http://127.0.0.1:PORT).
        #[arg(long, value_name = "URL")]
        registry: String,
        /// Parallel uploads.
        #[arg(short = 'j', long, default_value_t = 4)]
        jobs: usize,
        /// The repository receiving the blobs.
        #[arg(long, default_value = "floor/blobs")]
        repository: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    Standard,
    Bulk,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Folder to receive the storage root (DIR/docker/registry/v2/...).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "standard")]
    scenario: Scenario,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replace a non-empty DIR.
    #[arg(long)]
    force: bool,
    /// Bulk: number of repositories.
    #[arg(long, default_value_t = 20)]
    repositories: usize,
    /// Bulk: tags per repository.
    #[arg(long, default_value_t = 5)]
    tags_per_repo: usize,
    /// Bulk: size of the shared pool of base layers.
    #[arg(long, default_value_t = 8)]
    base_layers: usize,
    /// Bulk: size of each base layer, in KiB.
    #[arg(long, default_value_t = 4)]
    base_layer_kib: usize,
    /// Bulk: size of each image's own layer, in KiB.
    #[arg(long, default_value_t = 1)]
    unique_layer_kib: usize,
    /// Where the registry's temp dir goes [default: $FERRY_TESTKIT_TMPDIR, else /dev/shm
    /// if it exists, else the system temp dir]; Distribution fsyncs every write, so a tmpfs is much faster.
    #[arg(long, value_name = "DIR")]
    tmpdir: Option<PathBuf>,
    /// The registry's log.level (its log stays in the temp dir).
    #[arg(long, default_value = "info")]
    registry_log_level: String,
    /// Bulk: put every repository at two levels (teamN/svc-M) instead of 1 to 4.
    #[arg(long)]
    flat: bool,
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Generate(args) => generate(args),
        Command::Check { tree, truth } => check(&tree, truth),
        Command::UploadFloor {
            tree,
            truth,
            registry,
            jobs,
            repository,
        } => upload_floor(&tree, truth, &registry, jobs, &repository),
        Command::Proxy {
            backend,
            addr_file,
            seconds,
        } => proxy(&backend, &addr_file, seconds),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-testkit: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn check(dir: &Path, truth: Option<PathBuf>) -> Result<()> {
    let truth_file = truth.unwrap_or_else(|| truth_path(dir));
    let truth = Truth::load(&truth_file)?;
    check_tree(dir, &truth)?;
    eprintln!(
        "ferry-testkit: {} matches {} ({} tags, {} untagged, {} uploads)",
        dir.display(),
        truth_file.display(),
        truth.tags.len(),
        truth.untagged.len(),
        truth.uploads.len()
    );
    Ok(())
}

fn upload_floor(
    dir: &Path,
    truth: Option<PathBuf>,
    registry: &str,
    jobs: usize,
    repository: &str,
) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let truth = Truth::load(truth.unwrap_or_else(|| truth_path(dir)))?;
    let blobs: Vec<(String, u64)> = truth.all_blobs().into_iter().collect();
    let bytes: u64 = blobs.iter().map(|(_, s)| s).sum();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .build()
        .into();
    let base = registry.trim_end_matches('/');
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((digest, size)) = blobs.get(i) else {
                            return Ok(());
                        };
                        let post = agent
                            .post(format!("{base}/v2/{repository}/blobs/uploads/"))
                            .send_empty()
                            .context("POST upload")?;
                        let location = post
                            .headers()
                            .get("location")
                            .and_then(|v| v.to_str().ok())
                            .context("upload without Location")?
                            .to_string();
                        let location = if location.starts_with('/') {
                            format!("{base}{location}")
                        } else {
                            location
                        };
                        let mut file = fs::File::open(tree::blob_data(dir, digest))?;
                        let put = agent
                            .put(&location)
                            .query("digest", digest)
                            .header("Content-Type", "application/octet-stream")
                            .header("Content-Length", size.to_string())
                            .send(ureq::SendBody::from_reader(&mut file))
                            .with_context(|| format!("PUT {digest}"))?;
                        if put.status() != 201 {
                            bail!("PUT {digest}: {}", put.status());
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for r in results {
        r?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "ferry-testkit upload-floor: {} blobs, {bytes} bytes in {secs:.2} s ({:.1} MB/s) with {jobs} jobs",
        blobs.len(),
        bytes as f64 / secs / 1e6
    );
    Ok(())
}

fn proxy(backend: &str, addr_file: &Path, seconds: u64) -> Result<()> {
    let proxy = ferry_testkit::Proxy::start(backend)?;
    // Temp file + rename: a reader polling for the file never sees half an address.
    let temp = addr_file.with_extension("tmp");
    fs::write(&temp, proxy.host())?;
    fs::rename(&temp, addr_file)?;
    std::thread::sleep(std::time::Duration::from_secs(seconds));
    Ok(())
}

fn truth_path(out: &Path) -> PathBuf {
    let s = out.to_string_lossy();
    PathBuf::from(format!("{}.truth.json", s.trim_end_matches('/')))
}

fn prepare_out(out: &Path, force: bool) -> Result<()> {
    if out.exists() {
        let non_empty = fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some();
        if non_empty {
            if !force {
                bail!("{} is not empty (use --force to replace it)", out.display());
            }
            fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
        }
    }
    Ok(())
}

fn generate(args: GenerateArgs) -> Result<()> {
    let started = Instant::now();
    prepare_out(&args.out, args.force)?;
    let defaults = RegistryConfig::default();
    let temp_parent = args
        .tmpdir
        .clone()
        .or(defaults.temp_parent.clone())
        .or_else(|| {
            let shm = Path::new("/dev/shm");
            shm.is_dir().then(|| shm.to_path_buf())
        });
    let registry = Registry::start_with(RegistryConfig {
        log_level: args.registry_log_level.clone(),
        temp_parent,
        ..defaults
    })?;
    let truth = match args.scenario {
        Scenario::Standard => generate_standard(&registry, args.seed)?,
        Scenario::Bulk => {
            let spec = BulkSpec {
                repositories: args.repositories,
                tags_per_repo: args.tags_per_repo,
                base_layers: args.base_layers,
                base_layer_bytes: args.base_layer_kib * 1024,
                unique_layer_bytes: args.unique_layer_kib * 1024,
                nesting: !args.flat,
                seed: args.seed,
            };
            generate_bulk(&registry, &spec)?
        }
    };
    let stopped = registry.stop()?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    // A rename is enough on one filesystem; fall back to copying.
    if args.out.exists() {
        fs::remove_dir(&args.out)?;
    }
    if fs::rename(stopped.root(), &args.out).is_err() {
        tree::copy_tree(stopped.root(), &args.out)?;
    }
    let truth_file = truth_path(&args.out);
    truth.save(&truth_file)?;
    let bytes = tree::tree_bytes(&args.out)?;
    eprintln!(
        "ferry-testkit: {} tags in {} repositories, {} untagged, {} uploads; {} bytes in {} ({:.1}s); truth in {}",
        truth.tags.len(),
        truth.repositories().len(),
        truth.untagged.len(),
        truth.uploads.len(),
        bytes,
        args.out.display(),
        started.elapsed().as_secs_f64(),
        truth_file.display()
    );
    Ok(())
}
