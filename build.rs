//! Compiles `proto/*.proto` with protox (pure Rust: no system `protoc`
//! needed) into tonic servers and clients, and writes the encoded file
//! descriptor set that gRPC reflection serves.

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &[
    "file_watcher.proto",
    "content_tracker.proto",
    "sync.proto",
    // SSE hub (issue 12)
    "sse.proto",
    "query.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("obby_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
