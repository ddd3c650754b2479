//! Generates the CRI v1 types and services from the pinned upstream `cri/api.proto`, and the
//! NRI v0.12.1 messages from the unchanged upstream `nri/api.proto`.
//!
//! Debian bookworm's `protoc` (3.21) predates the `debug_redact` field option (protobuf 22)
//! that upstream puts on the registry credentials, so the file is compiled from a copy in
//! `OUT_DIR` with that option removed; the option's meaning (keep credentials out of debug
//! output) is kept by a hand-written `Debug` for `AuthConfig` in `src/lib.rs`.

use std::path::PathBuf;

const REDACT: &str = " [debug_redact = true]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=cri/api.proto");
    let upstream = std::fs::read_to_string("cri/api.proto")?;
    if !upstream.contains(REDACT) {
        return Err("cri/api.proto: expected `debug_redact` options to strip".into());
    }
    let dir = PathBuf::from(std::env::var("OUT_DIR")?).join("cri-proto");
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("api.proto");
    std::fs::write(&copy, upstream.replace(REDACT, ""))?;

    tonic_prost_build::configure()
        // Records on disk (pod.json, container.json) hold CRI configs as JSON.
        .type_attribute(
            ".runtime.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        // `KeyValue.value` became `bytes` in the CRI; keep it a JSON string in records.
        .field_attribute(
            ".runtime.v1.KeyValue.value",
            "#[serde(with = \"crate::cri_serde::bytes_as_string\")]",
        )
        // Upstream marks these fields `debug_redact`: our own Debug hides them.
        .skip_debug([".runtime.v1.AuthConfig"])
        .compile_protos(&[copy], &[dir])?;

    // NRI v0.12.1, unchanged upstream: messages only (the `nri` crate frames ttrpc itself).
    println!("cargo:rerun-if-changed=nri/api.proto");
    prost_build::Config::new().compile_protos(&["nri/api.proto"], &["nri"])?;
    Ok(())
}
