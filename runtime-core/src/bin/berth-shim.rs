//! `berth-shim`: the per-pod process (see `runtime_core::shim`).

fn main() -> std::process::ExitCode {
    runtime_core::shim::main()
}
