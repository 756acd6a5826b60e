//! Fuzz target: any bytes through the client line parser. It must never panic, and every line it
//! accepts must re-serialise (Display) to a line that parses to the same request.
//! Run: `cargo +nightly fuzz run parse_line` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The daemon's default message limit, and a small one so the length check is crossed often.
    chatd_proto::parse::check_round_trip(data, 2000).unwrap();
    chatd_proto::parse::check_round_trip(data, 16).unwrap();
});
