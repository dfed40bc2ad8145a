//! Benchmark (see tools/README).
fn main() {}
