//! `chatd_proto::irc` against the public IRC parser test vectors (ircdocs/parser-tests), which ship
//! as YAML inside the PyPI package `irc-parser-tests` (Python module `parser_tests`, files in its
//! `data/` folder). The folder is found by asking python3 where the module is, or taken from
//! IRC_PARSER_TESTS_DATA. A missing package fails these tests: vectors that silently did not run
//! would prove nothing. scripts/test.sh installs it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use chatd_proto::irc::{split_source, Message};
use serde::Deserialize;

#[derive(Deserialize)]
struct Suite<T> {
    tests: Vec<T>,
}

/// A message as the vectors describe it. Missing keys are null/empty; a tag without a value is "".
#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
struct Atoms {
    #[serde(default)]
    tags: BTreeMap<String, Option<String>>,
    source: Option<String>,
    verb: Option<String>,
    #[serde(default)]
    params: Vec<String>,
}

#[derive(Deserialize)]
struct SplitCase {
    input: String,
    atoms: Atoms,
}

#[derive(Deserialize)]
struct JoinCase {
    desc: String,
    atoms: Atoms,
    matches: Vec<String>,
}

#[derive(Deserialize)]
struct UserhostCase {
    source: String,
    atoms: UserhostAtoms,
}

#[derive(Deserialize)]
struct UserhostAtoms {
    nick: Option<String>,
    user: Option<String>,
    host: Option<String>,
}

const PYTHON_LOCATE: &str = "import parser_tests, pathlib; print(pathlib.Path(parser_tests.__file__).parent / 'data')";

fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IRC_PARSER_TESTS_DATA") {
        return dir.into();
    }
    let why = match Command::new("python3").args(["-c", PYTHON_LOCATE]).output() {
        Ok(out) if out.status.success() => return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("").to_string(),
        Err(e) => format!("cannot run python3: {e}"),
    };
    panic!(
        "the IRC parser test vectors are missing: pip install irc-parser-tests (scripts/test.sh does), \
         or set IRC_PARSER_TESTS_DATA to its data folder. python3 said: {why}"
    );
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path = data_dir().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let suite: Suite<T> = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!suite.tests.is_empty(), "{} has no tests", path.display());
    suite.tests
}

/// Our message as the vectors' atoms: a tag without a value is "" there.
fn atoms_of(m: &Message) -> Atoms {
    Atoms {
        tags: m.tags.iter().map(|(k, v)| (k.clone(), Some(v.clone().unwrap_or_default()))).collect(),
        source: m.source.clone(),
        verb: Some(m.command.clone()),
        params: m.params.clone(),
    }
}

/// The vectors' atoms with null tag values read as "", for comparison with [`atoms_of`].
fn normalised(atoms: &Atoms) -> Atoms {
    let tags = atoms.tags.iter().map(|(k, v)| (k.clone(), Some(v.clone().unwrap_or_default()))).collect();
    Atoms { tags, ..atoms.clone() }
}

fn message_of(atoms: &Atoms) -> Message {
    let mut m = Message::new(atoms.verb.clone().unwrap_or_default(), atoms.params.clone());
    m.source = atoms.source.clone();
    for (key, value) in &atoms.tags {
        m = m.with_tag(key.as_str(), value.as_deref());
    }
    m
}

/// Runs every case, then fails with all the failures at once (one vector's failure hides no other).
fn report(suite: &str, total: usize, failures: Vec<String>) {
    eprintln!("{suite}: {} of {total} vectors pass", total - failures.len());
    assert!(failures.is_empty(), "{suite}: {} of {total} vectors fail:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn msg_split() {
    let cases: Vec<SplitCase> = load("msg-split");
    let mut failures = Vec::new();
    for case in &cases {
        match Message::parse(&case.input) {
            Ok(m) if atoms_of(&m) == normalised(&case.atoms) => {}
            got => failures.push(format!("{:?}: expected {:?}, got {got:?}", case.input, case.atoms)),
        }
    }
    report("msg-split", cases.len(), failures);
}

#[test]
fn msg_join() {
    let cases: Vec<JoinCase> = load("msg-join");
    let mut failures = Vec::new();
    for case in &cases {
        let expected = normalised(&case.atoms);
        let line = message_of(&case.atoms).to_bytes();
        // Several lines are valid for one message: ours must read back as the same atoms.
        match Message::parse_bytes(&line) {
            Ok(m) if atoms_of(&m) == expected => {}
            got => failures.push(format!(
                "{}: wrote {:?}, which parsed as {got:?}",
                case.desc,
                String::from_utf8_lossy(&line)
            )),
        }
        // And every line the suite lists as a match must parse to those atoms.
        for listed in &case.matches {
            match Message::parse(listed) {
                Ok(m) if atoms_of(&m) == expected => {}
                got => failures.push(format!("{}: listed match {listed:?} parsed as {got:?}", case.desc)),
            }
        }
    }
    report("msg-join", cases.len(), failures);
}

#[test]
fn userhost_split() {
    let cases: Vec<UserhostCase> = load("userhost-split");
    let mut failures = Vec::new();
    for case in &cases {
        let a = &case.atoms;
        let expected =
            (a.nick.as_deref().unwrap_or(""), a.user.as_deref().unwrap_or(""), a.host.as_deref().unwrap_or(""));
        let got = split_source(&case.source);
        if got != expected {
            failures.push(format!("{:?}: expected {expected:?}, got {got:?}", case.source));
        }
    }
    report("userhost-split", cases.len(), failures);
}
