//! The Dockerfile's build stage must hold every file the crate reads at compile time.
//!
//! There is no Docker daemon in CI, so `docker build` itself cannot run here. What breaks
//! it in practice is a file the code pulls in with `include_str!`, `include_bytes!` or
//! `sqlx::migrate!` (or a build script) that the build stage does not `COPY`: this test
//! reads the sources and the Dockerfile and names every such file.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sources of the `COPY` instructions of the first stage (the build stage), as paths
/// relative to the build context.
fn build_stage_copies(dockerfile: &str) -> Vec<String> {
    let mut copies = Vec::new();
    let mut stages = 0;
    for line in dockerfile.lines() {
        let line = line.trim();
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("FROM ") {
            stages += 1;
            if stages > 1 {
                break;
            }
        } else if upper.starts_with("COPY ") {
            let words: Vec<&str> = line.split_whitespace().skip(1).collect();
            // COPY [--flags] SRC... DEST
            let args: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
            if let Some((_dest, srcs)) = args.split_last() {
                copies.extend(
                    srcs.iter()
                        .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_string()),
                );
            }
        }
    }
    copies
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Files and folders (relative to the crate's root) that the library and the `runwarden`
/// binary read while compiling.
fn compile_time_inputs() -> BTreeSet<String> {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut inputs = BTreeSet::new();
    if root.join("build.rs").exists() {
        inputs.insert("build.rs".to_string());
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (macro_name, relative_to_file) in [
            ("include_str!(\"", true),
            ("include_bytes!(\"", true),
            ("sqlx::migrate!(\"", false),
        ] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = &text[at + macro_name.len()..];
                let Some(end) = rest.find('"') else { continue };
                let arg = Path::new(&rest[..end]);
                let full = if relative_to_file {
                    file.parent().unwrap().join(arg)
                } else {
                    root.join(arg)
                };
                let rel = normalise(&full)
                    .strip_prefix(normalise(&root))
                    .unwrap_or_else(|_| {
                        panic!(
                            "{} reads {} outside the crate",
                            file.display(),
                            arg.display()
                        )
                    })
                    .to_string_lossy()
                    .into_owned();
                inputs.insert(rel);
            }
        }
    }
    inputs
}

#[test]
fn the_docker_build_stage_copies_every_file_read_at_compile_time() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let copies = build_stage_copies(&dockerfile);
    assert!(
        copies.iter().any(|c| c == "src"),
        "the build stage copies the sources: {copies:?}"
    );
    let inputs = compile_time_inputs();
    assert!(
        inputs.contains("rules.toml") && inputs.iter().any(|i| i.starts_with("migrations")),
        "the scan finds what the crate embeds: {inputs:?}"
    );
    let missing: Vec<&String> = inputs
        .iter()
        .filter(|input| {
            !copies
                .iter()
                .any(|c| *input == c || input.starts_with(&format!("{c}/")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the Dockerfile's build stage does not COPY {missing:?} (read at compile time); it copies {copies:?}"
    );
}

#[test]
fn the_copy_parser_reads_only_the_build_stage() {
    let copies = build_stage_copies(
        "FROM rust AS build\nCOPY Cargo.toml Cargo.lock ./\nCOPY --chown=1 src ./src\n\
         FROM debian\nCOPY rules.toml /etc/x\n",
    );
    assert_eq!(copies, ["Cargo.toml", "Cargo.lock", "src"]);
}
