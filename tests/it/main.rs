//! ferry's integration tests: one binary, grouped by theme, against real docker-registry processes.

mod util;

mod deploy;
mod export;
mod list;
mod push;
mod shard;
mod stops;
mod validate;
