//! Records how the module was built, for `haske._rust.BUILD_INFO`, and refuses to build a
//! module whose version differs from the Haske package it sits in (Haske would ignore it).

use std::env;
use std::fs;
use std::path::Path;
use std::process::Command;

fn rustc_version() -> String {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The version of `name` in Cargo.lock, which pins every dependency of this crate.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line == wanted {
            let version = lines
                .next()?
                .strip_prefix("version = \"")?
                .strip_suffix('"')?;
            return Some(version.to_owned());
        }
    }
    None
}

/// `__version__` of haske/_version.py, when the crate sits in a Haske checkout.
fn haske_version(manifest_dir: &Path) -> Option<String> {
    let text = fs::read_to_string(manifest_dir.join("../haske/_version.py")).ok()?;
    let line = text.lines().find(|line| line.starts_with("__version__"))?;
    Some(line.split('"').nth(1)?.to_owned())
}

fn main() {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let manifest_dir = Path::new(&manifest_dir);
    println!("cargo:rerun-if-changed=../haske/_version.py");
    let crate_version = env::var("CARGO_PKG_VERSION").unwrap_or_default();
    if let Some(haske) = haske_version(manifest_dir) {
        if haske != crate_version {
            eprintln!(
                "rust/Cargo.toml has version {crate_version} but haske/_version.py has {haske}; \
                 they must be equal"
            );
            std::process::exit(1);
        }
    }
    let lock_path = manifest_dir.join("Cargo.lock");
    let pyo3 = fs::read_to_string(&lock_path)
        .ok()
        .and_then(|lock| locked_version(&lock, "pyo3"))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=RUSTC");
    println!("cargo:rustc-env=HASKE_PYO3_VERSION={pyo3}");
    println!("cargo:rustc-env=HASKE_RUSTC_VERSION={}", rustc_version());
}
