//! Runs the repo's `runwarden-bench` binary the way the smoke tests do: with the given
//! arguments, `--json` into a temp file, `RUST_LOG` unset; asserts it exited 0 and returns
//! the JSON it wrote.

use std::ffi::OsStr;
use std::process::Command;

pub fn run_bench<I, S>(args: I) -> serde_json::Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_runwarden-bench"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "runwarden-bench failed:\n{stderr}");
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}
