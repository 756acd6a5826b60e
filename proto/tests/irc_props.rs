//! Properties of the IRC wire format (`chatd_proto::irc`): a message built from valid atoms is
//! written and parsed back unchanged, and no input makes the parser panic — any line it accepts
//! re-writes to a line that parses to the same message (`check_round_trip`, as the fuzz target).

use chatd_proto::irc::{check_round_trip, Message};
use proptest::prelude::*;

/// Keys as message-tags defines them (`[+][vendor/]name`), and opaque ones outside that grammar,
/// which a parser must keep too: anything but the separators (space, `;`, `=`) and NUL, CR, LF.
fn tag_key() -> impl Strategy<Value = String> {
    prop_oneof!["\\+?([a-z0-9-]{1,8}(\\.[a-z0-9-]{1,8}){0,2}/)?[a-zA-Z0-9-]{1,12}", "[^\\x00\r\n ;=]{1,12}"]
}

/// Any text but NUL (which no escape can carry): spaces, `;`, `\`, CR and LF must be escaped.
/// Empty values are left out: the parser reads them as no value, as the spec allows.
fn tag_value() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[^\\x00]{1,16}")
}

fn message() -> impl Strategy<Value = Message> {
    let tags = proptest::collection::vec((tag_key(), tag_value()), 0..5);
    let source = proptest::option::of("[^\\x00\r\n ]{1,16}");
    let command = "[A-Za-z]{1,10}|[0-9]{3}";
    // A parameter before the last is one non-empty word not starting with ':'; the last is any text.
    let middle = proptest::collection::vec("[^\\x00\r\n :][^\\x00\r\n ]{0,15}", 0..5);
    let last = proptest::option::of("[^\\x00\r\n]{0,16}");
    (tags, source, command, middle, last).prop_map(|(tags, source, command, middle, last)| {
        let mut m = Message::new(command, middle.into_iter().chain(last));
        m.source = source;
        // with_tag keeps keys unique, as a parsed message's are.
        for (key, value) in tags {
            m = m.with_tag(key, value.as_deref());
        }
        m
    })
}

/// Lines built from pieces of real ones, valid and not, so most of them get past the tags and the
/// source into the parameter rules: optional tags (escapes, `=`, odd keys), an optional source,
/// then words, trailing parts, runs of spaces and the forbidden characters.
fn irc_line() -> impl Strategy<Value = String> {
    let tags = "@(\\+?([a-z0-9]{1,4}\\.)?[a-z-]{0,6}(/[a-z-]{0,5})?(=[a-z\\\\:;=é ]{0,6})?;?){1,3}";
    let source = ":[a-z!@.~é]{0,10}";
    let piece =
        prop_oneof!["[A-Za-z]{1,8}|[0-9]{3}", "#?[a-z0-9:é@]{0,8}", ":[ a-z:é]{0,12}", " {1,3}", "[\\r\\n\\x00]",];
    let pieces = (proptest::option::of(tags), proptest::option::of(source), proptest::collection::vec(piece, 0..6));
    pieces.prop_map(|(tags, source, rest)| tags.into_iter().chain(source).chain(rest).collect::<Vec<_>>().join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn write_then_parse_is_identity(m in message()) {
        let line = m.to_bytes();
        prop_assert!(line.ends_with(b"\r\n"));
        prop_assert_eq!(Message::parse_bytes(&line), Ok(m));
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert_eq!(check_round_trip(&bytes), Ok(()));
    }

    #[test]
    fn any_text_never_panics(text in any::<String>()) {
        prop_assert_eq!(check_round_trip(text.as_bytes()), Ok(()));
    }

    /// Lines made mostly of the characters the grammar cares about, so the odd corners are hit.
    #[test]
    fn irc_shaped_text_round_trips(text in "[@:;= \\\\+/.a-z0-9\r\n\\x00é]{0,48}") {
        prop_assert_eq!(check_round_trip(text.as_bytes()), Ok(()));
    }

    #[test]
    fn irc_lines_round_trip(line in irc_line()) {
        prop_assert_eq!(check_round_trip(line.as_bytes()), Ok(()));
    }
}
