//! cargo-fuzz target `models`: the body is `runwarden::fuzzing::models` (see there for the
//! input format), which `tests/fuzz_regressions.rs` replays on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runwarden::fuzzing::models(data));
