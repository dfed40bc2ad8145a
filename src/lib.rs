//! obby-sync: a crash-safe sync engine for a folder of Markdown notes.
//!
//! The database (`obby.db`) is the coordination point. Producers (the startup
//! reconciliation, the CLI's `enqueue`, later the watcher and the gRPC api) only
//! write pending rows into `event_queue`; the [`engine`] claims them, reads and
//! hashes each file, diffs it against its previous version and commits the Obby
//! rows together with the queue acknowledgement in one transaction.
//!
//! Layout, in data-flow order:
//! - [`engine`]: configuration, database, patterns, reconciliation, queue,
//!   workers, store; [`engine::EngineHandle`] is its one door for the api,
//!   [`engine::Engine`] and [`engine::Database`] the CLI's.
//! - [`api`]: the gRPC and HTTP services, on top of an
//!   [`engine::EngineHandle`] only.
//! - [`cli`]: the `obby-sync` command line, on top of the engine's doors
//!   only; the only place `anyhow` is used.

pub mod api;
pub mod cli;
pub mod engine;
