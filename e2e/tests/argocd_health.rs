//! The Argo CD health check for Blueprints (charts/kaa-operator/argocd/blueprint-health.lua),
//! run by real Lua interpreters the way Argo CD runs it: 5.1 (Argo CD's gopher-lua dialect) and
//! 5.4 (`scripts/test-deps.sh` installs both). Cases: the fixtures in Argo CD's upstream layout
//! (argocd/health_test.yaml + testdata/), and statuses written by the operator's own status code,
//! so the check cannot drift from the conditions the operator sets; and the `Application` example
//! (docs/argocd-application.yaml) syncs files that exist.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::{fmt::Write as _, path::PathBuf, process::Command};

use kaa_operator::{
    crd::ServiceStatus,
    status::{self, Outcome},
};
use serde_json::{Value, json};

const INTERPRETERS: [&str; 2] = ["lua5.1", "lua5.4"];
const HEALTH_KEY: &str = "resource.customizations.health.kaa-rs.dev_Blueprint";

fn argocd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/kaa-operator/argocd")
}

/// A JSON value as a Lua expression (Argo CD hands the check the object as Lua tables).
fn lua(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => write!(out, "{b}").unwrap(),
        Value::Number(n) => write!(out, "{n}").unwrap(),
        Value::String(s) => lua_string(s, out),
        Value::Array(items) => {
            out.push('{');
            for item in items {
                lua(item, out);
                out.push_str(", ");
            }
            out.push('}');
        }
        Value::Object(fields) => {
            out.push('{');
            for (key, field) in fields {
                out.push('[');
                lua_string(key, out);
                out.push_str("] = ");
                lua(field, out);
                out.push_str(", ");
            }
            out.push('}');
        }
    }
}

fn lua_string(s: &str, out: &mut String) {
    out.push('"');
    for byte in s.bytes() {
        match byte {
            b'"' | b'\\' => write!(out, "\\{}", byte as char).unwrap(),
            0x20..=0x7e => out.push(byte as char),
            // Decimal escapes: the same in Lua 5.1 and 5.4, and byte-exact for UTF-8.
            _ => write!(out, "\\{byte:03}").unwrap(),
        }
    }
    out.push('"');
}

struct Case {
    name: String,
    obj: Value,
    status: &'static str,
    message: Option<String>,
}

fn health_status(s: &str) -> &'static str {
    match s {
        "Healthy" => "Healthy",
        "Progressing" => "Progressing",
        "Degraded" => "Degraded",
        "Suspended" => "Suspended",
        "Missing" => "Missing",
        other => panic!("not an Argo CD health status: {other}"),
    }
}

/// argocd/health_test.yaml: `tests: [{healthStatus: {status, message}, inputPath}]`.
fn fixture_cases() -> Vec<Case> {
    let dir = argocd_dir();
    let index: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("health_test.yaml")).unwrap()).unwrap();
    let tests = index["tests"].as_array().unwrap();
    assert!(tests.len() >= 3, "health_test.yaml has too few cases");
    tests
        .iter()
        .map(|test| {
            let path = test["inputPath"].as_str().unwrap();
            let obj: Value =
                serde_saphyr::from_str(&std::fs::read_to_string(dir.join(path)).unwrap()).unwrap();
            Case {
                name: path.to_owned(),
                obj,
                status: health_status(test["healthStatus"]["status"].as_str().unwrap()),
                message: test["healthStatus"]["message"].as_str().map(str::to_owned),
            }
        })
        .collect()
}

/// Statuses as the operator writes them for each way a reconcile can end.
fn operator_cases() -> Vec<Case> {
    let service = |name: &str, ready: i32| ServiceStatus {
        name: name.to_owned(),
        kind: name.to_owned(),
        desired_replicas: 2,
        ready_replicas: ready,
        config_version: None,
        config_applied: None,
        addresses: Vec::new(),
    };
    let now = "2026-05-20T10:00:00Z";
    let blueprint = |generation: i64, status: Option<kaa_operator::crd::BlueprintStatus>| {
        let mut obj = json!({
            "apiVersion": "kaa-rs.dev/v1alpha1",
            "kind": "Blueprint",
            "metadata": {"name": "smart-energy", "namespace": "kaa", "generation": generation},
            "spec": {"services": [{"kind": "kpc"}]},
        });
        if let Some(status) = status {
            obj["status"] = serde_json::to_value(status).unwrap();
        }
        obj
    };
    let applied_ready = status::status(
        None,
        Some(2),
        Outcome::Applied(vec![service("kpc", 2), service("epr", 2)]),
        now,
    );
    let applied_waiting = status::status(
        Some(&applied_ready),
        Some(2),
        Outcome::Applied(vec![service("kpc", 1), service("epr", 2)]),
        now,
    );
    let apply_failed = status::status(
        Some(&applied_ready),
        Some(2),
        Outcome::ApplyFailed("cannot apply Deployment `smart-energy-kpc`: timed out".into()),
        now,
    );
    let invalid = status::status(
        None,
        Some(2),
        Outcome::Invalid("spec.services[0].replicas: at least 1".into()),
        now,
    );
    let case = |name: &str, obj: Value, status: &'static str, message: Option<&str>| Case {
        name: format!("operator: {name}"),
        obj,
        status,
        message: message.map(str::to_owned),
    };
    vec![
        case(
            "every service ready",
            blueprint(2, Some(applied_ready.clone())),
            "Healthy",
            Some("AllServicesReady: every service instance is ready (2/2)"),
        ),
        case(
            "pods not ready",
            blueprint(2, Some(applied_waiting)),
            "Progressing",
            Some("ServicesNotReady: pods not ready: kpc 1/2"),
        ),
        case(
            "apply failed, retrying",
            blueprint(2, Some(apply_failed)),
            "Progressing",
            Some("ApplyFailed: cannot apply Deployment `smart-energy-kpc`: timed out"),
        ),
        case(
            "invalid spec",
            blueprint(2, Some(invalid.clone())),
            "Degraded",
            Some("InvalidSpec: spec.services[0].replicas: at least 1"),
        ),
        case(
            "ready, but for an older generation",
            blueprint(3, Some(applied_ready)),
            "Progressing",
            Some("Waiting for the operator to observe generation 3"),
        ),
        case(
            "stalled, but for an older generation",
            blueprint(3, Some(invalid)),
            "Progressing",
            None,
        ),
        case("no status yet", blueprint(1, None), "Progressing", None),
    ]
}

#[test]
fn the_argocd_health_check_maps_blueprint_conditions() {
    let mut cases = fixture_cases();
    cases.extend(operator_cases());
    let mut program = String::from("return {\n");
    for case in &cases {
        program.push_str("  { name = ");
        lua_string(&case.name, &mut program);
        program.push_str(", status = ");
        lua_string(case.status, &mut program);
        if let Some(message) = &case.message {
            program.push_str(", message = ");
            lua_string(message, &mut program);
        }
        program.push_str(", obj = ");
        lua(&case.obj, &mut program);
        program.push_str(" },\n");
    }
    program.push_str("}\n");
    let dir = tempfile::tempdir().unwrap();
    let cases_path = dir.path().join("cases.lua");
    std::fs::write(&cases_path, program).unwrap();
    let harness = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lua/health_harness.lua");
    let check = argocd_dir().join("blueprint-health.lua");
    for interpreter in INTERPRETERS {
        let output = Command::new(interpreter)
            .arg(&harness)
            .arg(&check)
            .arg(&cases_path)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {interpreter} ({e}): run scripts/test-deps.sh (apt: lua5.1 lua5.4)")
            });
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("{interpreter}:\n{stdout}");
        assert!(
            output.status.success(),
            "{interpreter}: the health check failed cases:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(&format!("{} cases, 0 failed", cases.len())),
            "{interpreter}: not every case ran:\n{stdout}"
        );
    }
}

#[test]
fn the_argocd_cm_snippet_holds_the_health_check_verbatim() {
    let dir = argocd_dir();
    let check = std::fs::read_to_string(dir.join("blueprint-health.lua")).unwrap();
    let cm: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("argocd-cm.yaml")).unwrap()).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    assert!(
        cm["data"][HEALTH_KEY].as_str() == Some(check.as_str()),
        "charts/kaa-operator/argocd/argocd-cm.yaml is stale: run `make generate`"
    );
}

#[test]
fn the_argocd_application_example_syncs_what_the_repository_holds() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(repo.join("docs/argocd-application.yaml")).unwrap();
    let apps: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let by_name = |name: &str| -> &Value {
        apps.iter()
            .find(|a| a["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Application {name}"))
    };
    for app in &apps {
        assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1");
        assert_eq!(app["kind"], "Application");
    }
    // The operator: the chart, with a watched namespace that is where the Blueprint goes.
    let operator = by_name("kaa-operator");
    let chart = operator["spec"]["source"]["path"].as_str().unwrap();
    assert!(
        repo.join(chart).join("Chart.yaml").is_file(),
        "{chart} is not a chart"
    );
    let watched = operator["spec"]["source"]["helm"]["valuesObject"]["watchNamespace"].clone();
    // The platform: exactly blueprints/smart-energy.yaml, a Blueprint.
    let platform = by_name("smart-energy");
    let source = &platform["spec"]["source"];
    let file = repo
        .join(source["path"].as_str().unwrap())
        .join(source["directory"]["include"].as_str().unwrap());
    let blueprint: Value = serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(blueprint["kind"], "Blueprint", "{}", file.display());
    assert_eq!(blueprint["metadata"]["name"], "smart-energy");
    assert_eq!(platform["spec"]["destination"]["namespace"], watched);
    let options = platform["spec"]["syncPolicy"]["syncOptions"].as_array().unwrap();
    assert!(options.iter().any(|o| o == "SkipDryRunOnMissingResource=true"));
}
