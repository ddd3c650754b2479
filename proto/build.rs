//! Generates the NRI message types from the unchanged upstream `nri/api.proto` (v0.12.1).

fn main() {
    println!("cargo:rerun-if-changed=nri/api.proto");
    let mut config = prost_build::Config::new();
    if let Err(e) = config.compile_protos(&["nri/api.proto"], &["nri"]) {
        eprintln!("generating the NRI types from nri/api.proto: {e}");
        std::process::exit(1);
    }
}
