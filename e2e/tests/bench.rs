//! The benchmarks' smoke test: `kaa-bench --quick` against `kaa up` and the peer (Mosquitto +
//! kaa-responder) runs every scenario of kaa-load end to end and reports in the documented shape.
//! No performance assertion: numbers belong to BENCHMARKS.md, not to tests.

use std::process::Command;

use serde_json::Value;

const SCENARIOS: [&str; 7] = [
    "reqresp-qos1",
    "reqresp80-qos1",
    "reqresp-qos0",
    "ingest-qos1",
    "ingest-qos0",
    "storm",
    "conns",
];

#[test]
fn quick_comparison_runs_every_scenario_against_kaa_up_and_the_peer() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_kaa-bench"))
        .args(["--quick", "--targets", "up,peer", "--out"])
        .arg(out.path())
        .env("KAA_BIN", kaa_e2e::kaa_bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kaa-bench failed:\n{stdout}\n{stderr}");

    // Every run ended with kaa-load's JSON line, with the scenario's figures.
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap()).unwrap();
    let runs = document["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2 * SCENARIOS.len(), "{document:#}");
    for run in runs {
        let result = &run["result"]["Ok"];
        assert!(result.is_object(), "a run failed: {run}\n{stderr}");
        let figure = match run["scenario"].as_str().unwrap() {
            s if s.starts_with("reqresp") => "rps",
            s if s.starts_with("ingest") => "stored_per_s",
            "storm" => "cycles_per_s",
            _ => "connects_per_s",
        };
        assert!(result[figure].as_f64().is_some(), "no {figure} in {run}");
    }
    // Both ends did work: requests were answered on kaa-rs and on the peer.
    for target in ["up", "peer"] {
        let answered = runs
            .iter()
            .filter(|r| r["target"] == target && r["scenario"] == "reqresp-qos1")
            .filter_map(|r| r["result"]["Ok"]["completed"].as_u64())
            .sum::<u64>();
        assert!(answered > 0, "{target}: no request answered");
        // The sustained run is paced at 80% of what the same target reached unpaced.
        let result = |scenario: &str| {
            let run = runs
                .iter()
                .find(|r| r["target"] == target && r["scenario"] == scenario);
            run.map(|r| r["result"]["Ok"].clone()).unwrap()
        };
        let (peak, paced) = (result("reqresp-qos1"), result("reqresp80-qos1"));
        let expected = 0.8 * peak["rps"].as_f64().unwrap();
        let rate = paced["rate"].as_f64().unwrap();
        assert!(rate > 0.0 && (rate - expected).abs() <= 0.5, "{target}: {paced}");
    }

    // The summary: one row per scenario and figure, with the up/peer ratio; the same rows as the
    // last stdout line and as a Markdown table.
    let rows = document["summary"].as_array().unwrap();
    for scenario in SCENARIOS {
        assert!(
            rows.iter().any(|r| r["scenario"] == scenario),
            "no row for {scenario}"
        );
    }
    let rps = rows
        .iter()
        .find(|r| r["scenario"] == "reqresp-qos1" && r["metric"] == "rps")
        .unwrap();
    assert!(
        rps["ratio_to_peer"]["up"]["median"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{rps}"
    );
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["summary"], document["summary"]);
    let table = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(
        table.contains("| scenario | figure | up | peer | up/peer |"),
        "{table}"
    );
}
