//! ferry's integration tests: one binary, grouped by theme, against real docker-registry processes.

mod util;

mod export;
mod list;
mod push;
mod validate;
mod verify;
