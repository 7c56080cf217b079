//! ferry's integration tests: one binary, grouped by theme, against real docker-registry processes.

mod util;

mod deploy;
mod export;
mod harbor;
mod hostile;
mod kills;
mod layouts;
mod list;
mod push;
mod shard;
mod stops;
mod tarball;
mod validate;
mod verify;
