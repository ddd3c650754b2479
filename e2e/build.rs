//! Compiles every `testprogs/*.c` into a static binary under `$OUT_DIR/testprogs/`,
//! exposed to the crate as `BERTH_TESTPROGS_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let progs_dir = out_dir.join("testprogs");
    fs::create_dir_all(&progs_dir).expect("create $OUT_DIR/testprogs");
    println!("cargo:rerun-if-changed=testprogs");
    for source in c_sources(Path::new("testprogs")) {
        println!("cargo:rerun-if-changed={}", source.display());
        let name = source.file_stem().expect("a .c file has a stem");
        compile(&source, &progs_dir.join(name));
    }
    println!(
        "cargo:rustc-env=BERTH_TESTPROGS_DIR={}",
        progs_dir.display()
    );
}

fn c_sources(dir: &Path) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read e2e/testprogs")
        .map(|entry| entry.expect("read e2e/testprogs entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "c"))
        .collect();
    sources.sort();
    sources
}

fn compile(source: &Path, output: &Path) {
    let result = Command::new("cc")
        .args(["-static", "-Os", "-Wall", "-o"])
        .arg(output)
        .arg(source)
        .output()
        .unwrap_or_else(|e| panic!("run cc for {}: {e}", source.display()));
    if !result.status.success() {
        panic!(
            "cc -static -Os {} failed ({}):\n{}",
            source.display(),
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
}
