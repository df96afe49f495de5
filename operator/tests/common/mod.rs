//! Loading sample Blueprints as the API server would hand them to the operator.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses its own part; test code

use kaa_operator::crd::Blueprint;

pub mod cluster;

pub const UID: &str = "0b6e4c1a-7d2f-4e55-9a3b-5f1c2d3e4f60";

/// `blueprints/<name>.yaml` as a stored resource: in namespace `kaa`, with a uid (for owner
/// references) and generation 1.
pub fn sample(name: &str) -> Blueprint {
    let path = format!("{}/../blueprints/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut bp: Blueprint = serde_saphyr::from_str(&text).unwrap();
    bp.metadata.namespace = Some("kaa".into());
    bp.metadata.uid = Some(UID.into());
    bp.metadata.generation = Some(1);
    bp
}

/// Compares `actual` with `tests/snapshots/<name>`; `UPDATE_SNAPSHOTS=1` rewrites it instead.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = format!("{}/tests/snapshots/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{path} differs from what the code builds, first at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             (run with UPDATE_SNAPSHOTS=1 and review the diff if the change is intended)",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}
