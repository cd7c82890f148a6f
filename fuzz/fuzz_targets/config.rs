//! cargo-fuzz target `config`: the body is `runwarden::fuzzing::config` (see there for the
//! input format), which `tests/fuzz_regressions.rs` replays on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runwarden::fuzzing::config(data));
