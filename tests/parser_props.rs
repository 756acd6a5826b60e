//! Property test of the line parser (runs in CI; the open-ended version is the fuzz target in
//! `fuzz/`): for any input, parsing never panics, and a line that parses re-serialises (Display)
//! to a canonical line that parses to the same request. Inputs mix raw bytes with lines built from
//! the protocol's own pieces, so most of them get past the verb and into the argument rules.

use chatd_proto::parse::{check_round_trip, parse_line};
use proptest::prelude::*;

const CASES: u32 = 20_000;

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        // Room and user names, valid and not, with the IRC-style '#'.
        "#?[A-Za-z0-9_-]{1,34}",
        // Passwords and tokens: printable, some non-ASCII.
        "[!-~]{1,20}",
        "[a-zé€😀]{1,12}",
        // A direct-message history target.
        "@[A-Za-z][A-Za-z0-9_-]{0,10}",
        // History options and numbers.
        Just("BEFORE".to_string()),
        Just("limit".to_string()),
        "[0-9]{1,22}",
        Just("-1".to_string()),
        // Free-text lookalikes and troublemakers.
        ":[ -~]{0,10}",
        "/[a-z]{1,6}(=[a-z.]{1,8})?",
        Just("\u{85}".to_string()),
        Just("\u{a0}".to_string()),
        "[\\x00-\\x1f\\x7f]",
        Just("".to_string()),
    ]
}

fn verb() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "HELP",
            "REGISTER",
            "LOGIN",
            "LOGOUT",
            "QUIT",
            "ROOMS",
            "JOIN",
            "PART",
            "NAMES",
            "WHO",
            "MSG",
            "HISTORY",
            "PING",
            "PONG",
            "SERVE",
            "TOPIC",
            "DM",
            "GUEST",
            "join",
            "Msg",
            "hIsToRy",
            "FROB",
            "PASSWD",
            "OP",
            "DEOP",
            "KICK",
            "BAN",
            "UNBAN",
            "BANS",
            "DELETE",
            "DELROOM",
            "DISABLE",
            "ENABLE",
            "RESETPASS",
            "ANNOUNCE",
            "KILL",
            "AUDIT",
            "RELOAD",
        ])
        .prop_map(str::to_string),
        "[A-Za-z]{1,8}",
    ]
}

/// `[@label SP] verb *(spaces piece) [spaces]`, with labels valid and not.
fn structured_line() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::option::of(prop_oneof!["[A-Za-z0-9._-]{1,33}", "[!-~]{0,5}"]),
        verb(),
        prop::collection::vec((1usize..4, piece()), 0..5),
        0usize..3,
    )
        .prop_map(|(label, verb, args, trailing)| {
            let mut line = String::new();
            if let Some(l) = label {
                line.push('@');
                line.push_str(&l);
                line.push(' ');
            }
            line.push_str(&verb);
            for (spaces, p) in args {
                line.push_str(&" ".repeat(spaces));
                line.push_str(&p);
            }
            line.push_str(&" ".repeat(trailing));
            line.into_bytes()
        })
}

/// Lines shaped by each command's own rules (mostly valid, with free text full of spaces, colons
/// and non-ASCII), so the round trip is checked on many accepted commands.
fn command_line() -> impl Strategy<Value = Vec<u8>> {
    let room = "#?[A-Za-z0-9][A-Za-z0-9_-]{0,31}";
    let user = "[A-Za-z][A-Za-z0-9_-]{1,23}";
    let password = "[!-~é]{8,20}";
    let text = "[ -~é€😀]{0,40}";
    let token = "[!-~]{1,10}";
    let sp = "[ ]{1,3}";
    let label = prop::option::of("@[A-Za-z0-9._-]{1,32} ");
    let body = prop_oneof![
        Just("HELP".to_string()),
        prop::sample::select(vec!["join", "WHO", "history", "msg"]).prop_map(|v| format!("HELP {v}")),
        (prop::sample::select(vec!["REGISTER", "login"]), sp, user, sp, password)
            .prop_map(|(v, a, u, b, p)| format!("{v}{a}{u}{b}{p}")),
        prop::sample::select(vec!["LOGOUT", "ROOMS", "QUIT", "PING"]).prop_map(str::to_string),
        (text).prop_map(|t| format!("QUIT {t}")),
        (prop::sample::select(vec!["JOIN", "part", "NAMES", "who"]), sp, room, "[ ]{0,2}")
            .prop_map(|(v, a, r, t)| format!("{v}{a}{r}{t}")),
        (sp, room, text).prop_map(|(a, r, t)| format!("MSG{a}{r} {t}")),
        (room, prop::option::of("[0-9]{1,4}"), prop::option::of("[0-9]{1,2}"), "[ ]{0,2}").prop_map(|(r, b, l, t)| {
            let mut s = format!("HISTORY {r}");
            if let Some(b) = b {
                s.push_str(&format!(" before {b}"));
            }
            if let Some(l) = l {
                s.push_str(&format!(" LIMIT {l}"));
            }
            s + &t
        }),
        (prop::sample::select(vec!["PING", "PONG"]), token).prop_map(|(v, t)| format!("{v} {t}")),
        "[a-z0-9_-]{1,12}".prop_map(|w| format!("SERVE {w}")),
        (sp, user, "[ ]{0,2}").prop_map(|(a, u, t)| format!("GUEST{a}{u}{t}")),
        moderation_line(),
    ];
    (label, body).prop_map(|(l, b)| format!("{}{b}", l.unwrap_or_default()).into_bytes())
}

/// The moderation and administration commands, shaped by their rules.
fn moderation_line() -> impl Strategy<Value = String> {
    let room = "#?[A-Za-z0-9][A-Za-z0-9_-]{0,31}";
    let user = "[A-Za-z][A-Za-z0-9_-]{1,23}";
    let password = "[!-~é]{8,20}";
    let reason = prop::option::of("[ -~é€😀]{0,40}");
    let with = |line: String, reason: Option<String>| match reason {
        Some(r) => format!("{line} {r}"),
        None => line,
    };
    prop_oneof![
        (password, password).prop_map(|(o, n)| format!("PASSWD {o} {n}")),
        (prop::sample::select(vec!["OP", "deop", "UNBAN"]), room, user).prop_map(|(v, r, u)| format!("{v} {r} {u}")),
        (prop::sample::select(vec!["KICK", "ban"]), room, user, reason.clone())
            .prop_map(move |(v, r, u, t)| with(format!("{v} {r} {u}"), t)),
        room.prop_map(|r| format!("BANS {r}")),
        (room, "[0-9]{1,6}").prop_map(|(r, i)| format!("DELETE {r} {i}")),
        (room, reason.clone()).prop_map(move |(r, t)| with(format!("DELROOM {r}"), t)),
        (prop::sample::select(vec!["DISABLE", "kill"]), user, reason)
            .prop_map(move |(v, u, t)| with(format!("{v} {u}"), t)),
        user.prop_map(|u| format!("ENABLE {u}")),
        (user, password).prop_map(|(u, p)| format!("RESETPASS {u} {p}")),
        "[ -~é€😀]{0,40}".prop_map(|t| format!("ANNOUNCE {t}")),
        prop::option::of("[0-9]{1,3}").prop_map(|n| n.map_or("AUDIT".to_string(), |n| format!("AUDIT LIMIT {n}"))),
        Just("RELOAD".to_string()),
    ]
}

fn any_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => command_line(),
        3 => structured_line(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => "[ -~]{0,64}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parsing_never_panics_and_canonical_forms_round_trip(line in any_line(), small in any::<bool>()) {
        check_round_trip(&line, if small { 16 } else { 2000 }).unwrap();
    }
}

/// The generators reach the interesting part: a good share of the lines parse, of every command.
#[test]
fn the_generators_produce_valid_commands() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let lines: Vec<Vec<u8>> = (0..5000).map(|_| any_line().new_tree(&mut runner).unwrap().current()).collect();
    let parsed: Vec<_> = lines.iter().filter_map(|l| parse_line(l, 2000).ok()).collect();
    assert!(
        parsed.len() >= 1000,
        "only {} of 5000 generated lines parse: the property test would be shallow",
        parsed.len()
    );
    for verb in chatd_proto::command::ALL_VERBS {
        assert!(parsed.iter().any(|r| r.command.verb() == verb), "no generated {verb:?} parses");
    }
}
