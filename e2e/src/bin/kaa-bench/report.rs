//! Medians, spreads and kaa-rs/peer ratios of the runs, as a Markdown table and a JSON document.

use serde::Serialize;
use serde_json::{Value, json};

/// One kaa-load run: its round, target, scenario and final JSON line (or why it failed).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Run {
    pub(crate) round: usize,
    pub(crate) target: String,
    pub(crate) scenario: String,
    pub(crate) result: Result<Value, String>,
}

/// The figure compared for each scenario: (JSON key, unit, higher is better).
pub(crate) fn metrics(scenario: &str) -> &'static [(&'static str, &'static str, bool)] {
    match scenario.split('-').next().unwrap_or_default() {
        "reqresp" | "reqresp80" => &[("rps", "req/s", true), ("p99_ms", "p99 ms", false)],
        "ingest" => &[("stored_per_s", "stored msg/s", true)],
        "conns" => &[
            ("rss_per_conn_kib", "KiB RSS/conn", false),
            ("connects_per_s", "connects/s", true),
        ],
        "storm" => &[("cycles_per_s", "cycles/s", true)],
        _ => &[],
    }
}

/// The problems a run reports (errors, timeouts, failures, lost messages), summed.
fn problems(value: &Value) -> u64 {
    ["errors", "timeouts", "failures", "lost", "closed"]
        .iter()
        .filter_map(|key| value[key].as_u64())
        .sum()
}

/// Median, minimum and maximum (`None` for no values).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) n: usize,
}

pub(crate) fn spread(values: &[f64]) -> Option<Spread> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    Some(Spread {
        median,
        min: sorted[0],
        max: sorted[n - 1],
        n,
    })
}

fn value_of(runs: &[Run], round: usize, target: &str, scenario: &str, key: &str) -> Option<f64> {
    runs.iter()
        .find(|r| r.round == round && r.target == target && r.scenario == scenario)
        .and_then(|r| r.result.as_ref().ok())
        .and_then(|v| v[key].as_f64())
}

/// Per scenario and figure: each target's spread, and each kaa-rs target's ratio to the peer
/// (per round, kaa-rs / peer of the same round).
pub(crate) fn summarize(runs: &[Run], targets: &[String], scenarios: &[String], rounds: usize) -> Value {
    let mut rows = Vec::new();
    for scenario in scenarios {
        for &(key, unit, higher_better) in metrics(scenario) {
            let mut per_target = serde_json::Map::new();
            let mut ratios = serde_json::Map::new();
            for target in targets {
                let values: Vec<f64> = (0..rounds)
                    .filter_map(|round| value_of(runs, round, target, scenario, key))
                    .collect();
                let issues: u64 = runs
                    .iter()
                    .filter(|r| &r.target == target && &r.scenario == scenario)
                    .map(|r| r.result.as_ref().map_or(1, problems))
                    .sum();
                per_target.insert(
                    target.clone(),
                    json!({ "spread": spread(&values), "problems": issues }),
                );
                if target == "peer" {
                    continue;
                }
                let ratio: Vec<f64> = (0..rounds)
                    .filter_map(|round| {
                        let ours = value_of(runs, round, target, scenario, key)?;
                        let peer = value_of(runs, round, "peer", scenario, key)?;
                        (peer != 0.0).then(|| ours / peer)
                    })
                    .collect();
                ratios.insert(target.clone(), json!(spread(&ratio)));
            }
            rows.push(json!({
                "scenario": scenario,
                "metric": key,
                "unit": unit,
                "higher_is_better": higher_better,
                "targets": per_target,
                "ratio_to_peer": ratios,
            }));
        }
    }
    Value::Array(rows)
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        let whole = x.round() as i64;
        let digits = whole.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if whole < 0 { format!("-{out}") } else { out }
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn fmt_spread(s: &Value) -> String {
    match (
        s["median"].as_f64(),
        s["min"].as_f64(),
        s["max"].as_f64(),
        s["n"].as_u64(),
    ) {
        (Some(median), Some(min), Some(max), Some(n)) if n > 1 => {
            format!("{} ({}–{})", fmt_num(median), fmt_num(min), fmt_num(max))
        }
        (Some(median), ..) => fmt_num(median),
        _ => "–".to_owned(),
    }
}

/// The Markdown table of [`summarize`]'s rows.
pub(crate) fn markdown(rows: &Value, targets: &[String]) -> String {
    let ours: Vec<&String> = targets.iter().filter(|t| *t != "peer").collect();
    let mut out = String::from("| scenario | figure |");
    for target in targets {
        out.push_str(&format!(" {target} |"));
    }
    for target in &ours {
        out.push_str(&format!(" {target}/peer |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(targets.len() + ours.len()));
    out.push('\n');
    for row in rows.as_array().into_iter().flatten() {
        let better = match row["higher_is_better"].as_bool() {
            Some(true) => "↑",
            _ => "↓",
        };
        out.push_str(&format!(
            "| {} | {} {better} |",
            row["scenario"].as_str().unwrap_or_default(),
            row["unit"].as_str().unwrap_or_default()
        ));
        for target in targets {
            let cell = &row["targets"][target.as_str()];
            let problems = cell["problems"].as_u64().unwrap_or(0);
            let mark = if problems > 0 {
                format!(" ⚠{problems}")
            } else {
                String::new()
            };
            out.push_str(&format!(" {}{mark} |", fmt_spread(&cell["spread"])));
        }
        for target in &ours {
            out.push_str(&format!(
                " {} |",
                fmt_spread(&row["ratio_to_peer"][target.as_str()])
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_median() {
        let s = spread(&[3.0, 1.0, 2.0]).map(|s| (s.median, s.min, s.max));
        assert_eq!(s, Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(&[1.0, 2.0]).map(|s| s.median), Some(1.5));
        assert!(spread(&[]).is_none());
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        let run = |round, target: &str, rps: f64| Run {
            round,
            target: target.to_owned(),
            scenario: "reqresp-qos1".to_owned(),
            result: Ok(json!({ "rps": rps, "p99_ms": 1.0, "errors": 0 })),
        };
        let runs = [
            run(0, "up", 200.0),
            run(0, "peer", 100.0),
            run(1, "up", 300.0),
            run(1, "peer", 100.0),
        ];
        let targets = ["up".to_owned(), "peer".to_owned()];
        let rows = summarize(&runs, &targets, &["reqresp-qos1".to_owned()], 2);
        assert_eq!(rows[0]["ratio_to_peer"]["up"]["median"], 2.5);
        assert_eq!(rows[0]["targets"]["peer"]["spread"]["median"], 100.0);
        let table = markdown(&rows, &targets);
        assert!(
            table.contains("| reqresp-qos1 | req/s ↑ | 250 (200–300) | 100 (100–100) | 2.50 (2.00–3.00) |")
        );
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(fmt_num(17_234.4), "17,234");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(0.744), "0.74");
    }
}
