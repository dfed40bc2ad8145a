//! obby-sync's integration tests: one binary, real files in temp folders, a
//! real SQLite file, the real `obby-sync` executable.

mod api;
mod backend;
mod cli_errors;
mod contention;
mod crash;
mod diffs;
mod faults;
mod fixture;
mod hostile;
mod inputs;
mod layout;
mod pipeline;
mod poison;
mod query;
mod replay;
mod replicas;
mod sse;
mod traps;
mod watch;
