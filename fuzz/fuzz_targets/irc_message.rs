//! Fuzz target: any bytes through the IRC message parser. It must never panic, and every line it
//! accepts must be written back (`Message::write`) as a line that parses to the same message.
//! Run: `cargo +nightly fuzz run irc_message` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chatd_proto::irc::check_round_trip(data).unwrap();
});
