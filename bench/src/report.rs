//! `chatd-bench report DIR`: the side-by-side table of bench/compare.sh. Reads the JSON results
//! named `r<round>-<server>-<scenario>.json`, takes the median of each figure over the rounds and
//! prints chatd next to each peer with the ratio chatd / best peer. Two servers are not peers and
//! get a ratio column of their own when present: the bare server (`chatd-bare`, the limit of our
//! stack: chatd / bare) and an earlier chatd binary (`before`: chatd / before). With `--rounds`,
//! every round's figures follow, and chatd's ratio to each other server round by round (noise on a
//! shared machine moves whole rounds, so a ratio taken within a round is steadier than a ratio of
//! medians).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

struct Metric {
    name: &'static str,
    scenario: &'static str,
    /// Which fan-out phase (by label), if any.
    phase: Option<&'static str>,
    path: &'static [&'static str],
    scale: f64,
    higher_is_better: bool,
}

const METRICS: &[Metric] = &[
    Metric {
        name: "burst deliveries/s (saturation)",
        scenario: "fanout",
        phase: Some("burst"),
        path: &["deliveries_per_sec"],
        scale: 1.0,
        higher_is_better: true,
    },
    Metric {
        name: "burst server CPU µs/delivery",
        scenario: "fanout",
        phase: Some("burst"),
        path: &["server_cpu_us_per_delivery"],
        scale: 1.0,
        higher_is_better: false,
    },
    Metric {
        name: "burst latency p99 ms",
        scenario: "fanout",
        phase: Some("burst"),
        path: &["latency", "p99_us"],
        scale: 1e-3,
        higher_is_better: false,
    },
    Metric {
        name: "burst generator CPU (cores)",
        scenario: "fanout",
        phase: Some("burst"),
        path: &["generator_cpu_util"],
        scale: 1.0,
        higher_is_better: false,
    },
    Metric {
        name: "paced deliveries/s",
        scenario: "fanout",
        phase: Some("paced"),
        path: &["deliveries_per_sec"],
        scale: 1.0,
        higher_is_better: true,
    },
    Metric {
        name: "paced latency p50 ms",
        scenario: "fanout",
        phase: Some("paced"),
        path: &["latency", "p50_us"],
        scale: 1e-3,
        higher_is_better: false,
    },
    Metric {
        name: "paced latency p99 ms",
        scenario: "fanout",
        phase: Some("paced"),
        path: &["latency", "p99_us"],
        scale: 1e-3,
        higher_is_better: false,
    },
    Metric {
        name: "paced latency p99.9 ms",
        scenario: "fanout",
        phase: Some("paced"),
        path: &["latency", "p999_us"],
        scale: 1e-3,
        higher_is_better: false,
    },
    Metric {
        name: "paced server CPU µs/delivery",
        scenario: "fanout",
        phase: Some("paced"),
        path: &["server_cpu_us_per_delivery"],
        scale: 1.0,
        higher_is_better: false,
    },
    Metric {
        name: "paced lost deliveries",
        scenario: "fanout",
        phase: Some("paced"),
        path: &["lost"],
        scale: 1.0,
        higher_is_better: false,
    },
    Metric {
        name: "idle KiB/connection",
        scenario: "idle",
        phase: None,
        path: &["bytes_per_connection"],
        scale: 1.0 / 1024.0,
        higher_is_better: false,
    },
    Metric {
        name: "idle connect+login+join all, s",
        scenario: "idle",
        phase: None,
        path: &["connect_secs"],
        scale: 1.0,
        higher_is_better: false,
    },
];

fn lookup<'a>(v: &'a Value, m: &Metric) -> Option<&'a Value> {
    let mut cur = &v["results"];
    if let Some(label) = m.phase {
        cur = cur["phases"].as_array()?.iter().find(|p| p["phase"] == label)?;
    }
    for k in m.path {
        cur = cur.get(k)?;
    }
    Some(cur)
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    Some(if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 })
}

fn fmt(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The ratio `subject / other` of one row, or "-".
fn ratio(subject: Option<f64>, other: Option<f64>) -> String {
    match (subject, other) {
        (Some(c), Some(b)) if b != 0.0 => format!("{:.2}x", c / b),
        _ => "-".into(),
    }
}

/// server -> scenario -> round -> that round's JSON.
type Results = BTreeMap<String, BTreeMap<String, BTreeMap<u32, Value>>>;

/// One metric's figure for each round a server has it in.
fn figures(data: &Results, server: &str, m: &Metric) -> BTreeMap<u32, f64> {
    let Some(runs) = data[server].get(m.scenario) else { return BTreeMap::new() };
    runs.iter().filter_map(|(r, v)| Some((*r, lookup(v, m)?.as_f64()? * m.scale))).collect()
}

/// `subject`: the server compared; `not_peers`: servers with their own ratio column (the bare
/// server, an earlier build), left out of the best peer; `per_round`: the rounds' own figures and
/// ratios after the medians.
pub fn report(dir: &Path, subject: &str, not_peers: &[&str], per_round: bool) -> Result<String> {
    let mut data = Results::new();
    let mut rounds = 0u32;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = name.strip_suffix(".json") else { continue };
        let parts: Vec<&str> = stem.splitn(3, '-').collect();
        if parts.len() != 3 || !parts[0].starts_with('r') {
            continue;
        }
        let Ok(round) = parts[0][1..].parse::<u32>() else { continue };
        rounds = rounds.max(round);
        let v: Value = match std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()) {
            Some(v) => v,
            None => continue,
        };
        data.entry(parts[1].to_string()).or_default().entry(parts[2].to_string()).or_default().insert(round, v);
    }
    if data.is_empty() {
        bail!("no r<round>-<server>-<scenario>.json results in {}", dir.display());
    }
    let mut servers: Vec<String> = data.keys().cloned().collect();
    servers.sort_by_key(|s| (s != subject, s.clone()));
    let peers: Vec<&String> = servers.iter().filter(|s| *s != subject && !not_peers.contains(&s.as_str())).collect();
    let own: Vec<&str> = not_peers.iter().copied().filter(|n| *n != subject && data.contains_key(*n)).collect();

    let mut out = String::new();
    let width = 34;
    out += &format!("{:<width$}", "median of rounds");
    for s in &servers {
        out += &format!(" {s:>12}");
    }
    if !peers.is_empty() {
        out += &format!(" {:>16}", format!("{subject}/best peer"));
    }
    for n in &own {
        out += &format!(" {:>14}", format!("{subject}/{n}"));
    }
    out += "\n";
    for m in METRICS {
        let mut medians = BTreeMap::new();
        for s in &servers {
            medians.insert(s.clone(), median(figures(&data, s, m).into_values().collect()));
        }
        if medians.values().all(Option::is_none) {
            continue;
        }
        out += &format!("{:<width$}", m.name);
        for s in &servers {
            out += &format!(" {:>12}", fmt(medians[s]));
        }
        let best = peers.iter().filter_map(|p| medians[*p]).fold(None::<f64>, |acc, x| {
            Some(match acc {
                None => x,
                Some(a) if m.higher_is_better => a.max(x),
                Some(a) => a.min(x),
            })
        });
        let mine = medians.get(subject).copied().flatten();
        if !peers.is_empty() {
            out += &format!(" {:>16}", ratio(mine, best));
        }
        for n in &own {
            out += &format!(" {:>14}", ratio(mine, medians[*n]));
        }
        out += "\n";
    }
    let mut notes = Vec::new();
    for s in &servers {
        for (scen, runs) in &data[s] {
            let bad = runs.values().filter(|v| v["ok"] == false).count();
            if bad > 0 {
                notes.push(format!("{s} {scen}: {bad} of {} runs had losses, drops or errors", runs.len()));
            }
            if let Some(v) = runs.values().next() {
                notes.push(format!(
                    "{s} {scen}: {} ({}), params {}",
                    v["proto"],
                    if v["tls"] == true { "TLS" } else { "plaintext" },
                    v["params"]
                ));
            }
        }
    }
    out += &format!("({rounds} rounds; ratio < 1 is better for {subject} except on the deliveries/s rows)\n");
    for n in notes {
        out += &format!("  {n}\n");
    }
    if per_round {
        out += &rounds_table(&data, &servers, subject);
    }
    Ok(out)
}

/// Every round's figure of each metric and server, then the subject's ratio to each other server
/// round by round (rounds both have) and the median of those ratios.
fn rounds_table(data: &Results, servers: &[String], subject: &str) -> String {
    let mut out = String::from("\nround by round\n");
    for m in METRICS {
        let by_server: Vec<(&String, BTreeMap<u32, f64>)> =
            servers.iter().map(|s| (s, figures(data, s, m))).filter(|(_, f)| !f.is_empty()).collect();
        if by_server.is_empty() {
            continue;
        }
        out += &format!("{}\n", m.name);
        for (s, f) in &by_server {
            let values: Vec<String> = f.values().map(|x| fmt(Some(*x))).collect();
            out += &format!("  {s:<12} {}\n", values.join(" "));
        }
        let Some((_, mine)) = by_server.iter().find(|(s, _)| *s == subject) else { continue };
        for (s, theirs) in by_server.iter().filter(|(s, _)| *s != subject) {
            let ratios: Vec<f64> =
                mine.iter().filter_map(|(r, x)| theirs.get(r).filter(|y| **y != 0.0).map(|y| x / y)).collect();
            let Some(mid) = median(ratios.clone()) else { continue };
            let each: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
            out += &format!("  {subject}/{s}: {mid:.2}x (median of {}: {})\n", ratios.len(), each.join(" "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, paced_cpu: f64) {
        let v = serde_json::json!({
            "ok": true, "proto": "irc", "tls": true, "params": {},
            "results": {"phases": [{"phase": "paced", "server_cpu_us_per_delivery": paced_cpu}]},
        });
        std::fs::write(dir.join(name), v.to_string()).unwrap();
    }

    #[test]
    fn bare_and_before_are_not_peers() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "r1-chatd-fanout.json", 10.0);
        write(dir.path(), "r1-inspircd-fanout.json", 8.0);
        write(dir.path(), "r1-bare-fanout.json", 4.0);
        write(dir.path(), "r1-before-fanout.json", 2.0);
        let t = report(dir.path(), "chatd", &["bare", "before"], false).unwrap();
        let head = t.lines().next().unwrap();
        assert!(
            head.contains("chatd/best peer") && head.contains("chatd/bare") && head.contains("chatd/before"),
            "{t}"
        );
        let row = t.lines().find(|l| l.starts_with("paced server CPU")).unwrap();
        // best peer is InspIRCd (8), not before (2) or bare (4).
        assert!(row.ends_with("1.25x          2.50x          5.00x"), "{row}");

        // Only chatd and before (CHATD_BEFORE with SERVERS="chatd before"): no best-peer column.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "r1-chatd-fanout.json", 10.0);
        write(dir.path(), "r1-before-fanout.json", 5.0);
        let t = report(dir.path(), "chatd", &["bare", "before"], false).unwrap();
        assert!(!t.contains("best peer") && t.contains("chatd/before"), "{t}");
        assert!(t.lines().find(|l| l.starts_with("paced server CPU")).unwrap().ends_with(" 2.00x"), "{t}");
        assert!(!t.contains("round by round"), "{t}");
    }

    #[test]
    fn rounds_come_in_round_order_with_the_ratio_taken_within_each_round() {
        let dir = tempfile::tempdir().unwrap();
        // Written out of order; round 10 sorts after round 2.
        for (r, chatd, bare) in [(10, 30.0, 10.0), (2, 12.0, 8.0), (1, 10.0, 10.0)] {
            write(dir.path(), &format!("r{r}-chatd-fanout.json"), chatd);
            write(dir.path(), &format!("r{r}-bare-fanout.json"), bare);
        }
        let t = report(dir.path(), "chatd", &["bare"], true).unwrap();
        let table = t.split("round by round\n").nth(1).expect("the rounds table");
        let rows: Vec<&str> = table.lines().skip_while(|l| !l.starts_with("paced server CPU")).take(4).collect();
        assert_eq!(rows[1].split_whitespace().collect::<Vec<_>>(), ["chatd", "10.0", "12.0", "30.0"], "{t}");
        assert_eq!(rows[2].split_whitespace().collect::<Vec<_>>(), ["bare", "10.0", "8.00", "10.0"], "{t}");
        // Ratios 1.00, 1.50, 3.00: their median is 1.50 (the ratio of the medians would be 1.20).
        assert_eq!(rows[3], "  chatd/bare: 1.50x (median of 3: 1.00 1.50 3.00)", "{t}");
    }
}
