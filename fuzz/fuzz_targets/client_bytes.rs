//! Fuzzes what a client's bytes go through before the engine: the coordinator's framing limits
//! and shape checks, then pgwire's decoder. A panic anywhere is a crash libFuzzer reports.
//! Run: `cargo fuzz run client_bytes fuzz/corpus/client_bytes -- -max_total_time=60`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tessera_coordinator::pg::fuzzing::decode_client_bytes(data);
});
