//! Replays the cargo-fuzz inputs on stable (issue 8): every crash input saved under
//! `tests/fuzz_regressions/<target>/` by `fuzz/run.sh`, and the seed corpus
//! `fuzz/seeds/<target>/` (plus the repo's `rules.toml` for `config`), through the very
//! functions the fuzz targets call (`runwarden::fuzzing::{webhook, config, models}`).
//! Each input must run without a panic; every failing file is named.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The files directly in `dir` (none when it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Runs `f` on every input of `target`; panics listing the inputs that panicked.
fn replay(target: &str, f: fn(&[u8]), extra: &[PathBuf]) -> usize {
    let seeds = files(&Path::new(ROOT).join("fuzz/seeds").join(target));
    assert!(
        !seeds.is_empty(),
        "the seed corpus fuzz/seeds/{target}/ is missing"
    );
    let regressions = files(&Path::new(ROOT).join("tests/fuzz_regressions").join(target));
    let mut failed = Vec::new();
    let inputs: Vec<PathBuf> = seeds
        .into_iter()
        .chain(regressions)
        .chain(extra.iter().cloned())
        .collect();
    for path in &inputs {
        let data = std::fs::read(path).unwrap();
        if let Err(e) = std::panic::catch_unwind(|| f(&data)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: {msg}", path.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} input(s) panicked:\n{}",
        failed.len(),
        failed.join("\n")
    );
    inputs.len()
}

#[test]
fn webhook_inputs_never_panic() {
    replay("webhook", runwarden::fuzzing::webhook, &[]);
}

#[test]
fn config_inputs_never_panic() {
    replay(
        "config",
        runwarden::fuzzing::config,
        &[Path::new(ROOT).join("rules.toml")],
    );
}

#[test]
fn models_inputs_never_panic() {
    replay("models", runwarden::fuzzing::models, &[]);
}

/// The seeds are valid documents (so the replay reaches past the parsers: the signature
/// verifies, the run reads, the config loads), and a panicking target fails the replay.
#[test]
fn the_targets_check_their_properties_on_real_inputs() {
    let run = std::fs::read(Path::new(ROOT).join("fuzz/seeds/models/run")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&run).unwrap();
    assert!(serde_json::from_value::<runwarden::currents::Run>(v).is_ok());
    let hook = std::fs::read(Path::new(ROOT).join("fuzz/seeds/webhook/github-push")).unwrap();
    let (sig, body) = hook.split_at(hook.iter().position(|&b| b == b'\n').unwrap());
    let secrets = [runwarden::secret::Secret::new("fuzz-webhook-secret")];
    let sig = std::str::from_utf8(sig).unwrap();
    assert!(runwarden::intake::webhooks::verify_github_signature(
        &secrets,
        sig,
        &body[1..]
    ));
    let config = std::fs::read(Path::new(ROOT).join("rules.toml")).unwrap();
    assert!(
        runwarden::config::load_str(std::str::from_utf8(&config).unwrap(), "rules.toml", &[])
            .is_ok()
    );
    // A panic inside a target surfaces as a failure of `replay`.
    let r = std::panic::catch_unwind(|| {
        replay("models", |_| panic!("boom"), &[]);
    });
    assert!(r.is_err());
}
