//! Builds the eBPF objects: with clang and llvm-strip on PATH, `bpf/build.sh` compiles
//! `bpf/*.bpf.c` into OUT_DIR; otherwise (or if that fails) the committed `bpf/*.bpf.o` are copied.
//! CI runs `bpf/build.sh --check` so the committed objects never go stale.

use std::path::{Path, PathBuf};
use std::process::Command;

const OBJECTS: &[&str] = &["nexus_policy.bpf.o"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let bpf = manifest.join("bpf");
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=NEXUS_EBPF_USE_COMMITTED");

    let compiled = std::env::var_os("NEXUS_EBPF_USE_COMMITTED").is_none()
        && have("clang")
        && have("llvm-strip")
        && compile(&bpf, &out);
    let source = if compiled {
        "clang"
    } else {
        for name in OBJECTS {
            if let Err(e) = std::fs::copy(bpf.join(name), out.join(name)) {
                println!("cargo:warning=copying committed eBPF object {name}: {e}");
            }
        }
        "committed"
    };
    println!("cargo:rustc-env=NEXUS_EBPF_OBJECT_SOURCE={source}");
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn compile(bpf: &Path, out: &Path) -> bool {
    match Command::new("sh")
        .arg(bpf.join("build.sh"))
        .arg(out)
        .output()
    {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            for line in String::from_utf8_lossy(&o.stderr).lines().take(20) {
                println!("cargo:warning=clang: {line}");
            }
            println!(
                "cargo:warning=compiling the eBPF programs failed; using the committed objects"
            );
            false
        }
        Err(e) => {
            println!("cargo:warning=running bpf/build.sh: {e}; using the committed objects");
            false
        }
    }
}
