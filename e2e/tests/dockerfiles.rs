//! The Dockerfiles cannot be built here (no Docker engine), so this checks what can be checked
//! without one: each is a multi-stage build on the workspace's Rust version that builds one
//! package with the lock file, copies only that binary into a distroless runtime and runs it as
//! the non-root user the operator's pods and the chart use; and .dockerignore keeps everything
//! cargo needs in the build context.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::PathBuf;

use serde_json::Value;

/// The user of the images, of the pods the operator creates and of the chart's pod.
const NON_ROOT: &str = "65532";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn workspace_manifest() -> toml_like::Manifest {
    toml_like::parse(&read("Cargo.toml"))
}

/// Just enough of Cargo.toml: `rust-version` and the members, without a TOML dependency.
mod toml_like {
    #[derive(Debug)]
    pub struct Manifest {
        pub rust_version: String,
        pub members: Vec<String>,
    }

    pub fn parse(text: &str) -> Manifest {
        let rust_version = text
            .lines()
            .find_map(|l| l.strip_prefix("rust-version = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        let start = text.find("members = [").unwrap();
        let end = start + text[start..].find(']').unwrap();
        let members = text[start..end]
            .lines()
            .skip(1)
            .map(|l| l.trim().trim_end_matches(',').trim_matches('"').to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        Manifest {
            rust_version,
            members,
        }
    }
}

fn check_dockerfile(path: &str, package: &str, binary: &str) {
    let text = read(path);
    let rust_version = workspace_manifest().rust_version;
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&&str> = instructions.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{path}: a build stage and a runtime stage");
    assert_eq!(
        *froms[0],
        format!("FROM rust:{rust_version}-bookworm AS build"),
        "{path}: the builder is the workspace's rust-version"
    );
    assert!(
        froms[1].starts_with("FROM gcr.io/distroless/cc-debian12:nonroot"),
        "{path}: runtime {}",
        froms[1]
    );
    assert!(
        text.contains(&format!("cargo build --release --locked -p {package}")),
        "{path}: builds -p {package} with the lock file"
    );
    let runtime = text.split("FROM gcr.io/distroless").nth(1).unwrap();
    let copies: Vec<&str> = runtime.lines().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(
        copies,
        [format!(
            "COPY --from=build /usr/local/bin/{binary} /usr/local/bin/{binary}"
        )],
        "{path}: only the binary goes into the runtime image"
    );
    assert!(
        runtime.contains(&format!("USER {NON_ROOT}:{NON_ROOT}")),
        "{path}: non-root"
    );
    assert!(
        runtime.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{binary}\"]")),
        "{path}: entrypoint"
    );
}

#[test]
fn the_data_plane_dockerfile_builds_kaa() {
    check_dockerfile("docker/kaa.Dockerfile", "kaa", "kaa");
}

#[test]
fn the_operator_dockerfile_builds_kaa_operator() {
    check_dockerfile("docker/operator.Dockerfile", "kaa-operator", "kaa-operator");
}

#[test]
fn the_docker_build_context_keeps_what_cargo_needs() {
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_matches('/').to_owned())
        .collect();
    let mut needed = workspace_manifest().members;
    // The workspace files, and the sample `kaa up` compiles in (include_str!).
    needed.extend(["Cargo.toml", "Cargo.lock", "blueprints"].map(String::from));
    for path in &needed {
        for pattern in &ignored {
            let covers = path == pattern || path.starts_with(&format!("{pattern}/")) || pattern == "*";
            assert!(
                !covers,
                ".dockerignore `{pattern}` drops `{path}`, which cargo needs"
            );
        }
    }
    assert!(
        ignored.contains(&"target".to_owned()),
        "target/ stays out of the context"
    );
    assert!(ignored.contains(&".git".to_owned()));
}

#[test]
fn the_chart_runs_the_operator_as_the_images_user() {
    let values: Value = serde_saphyr::from_str(&read("charts/kaa-operator/values.yaml")).unwrap();
    assert_eq!(values["podSecurityContext"]["runAsUser"].to_string(), NON_ROOT);
    assert_eq!(values["podSecurityContext"]["runAsNonRoot"], true);
}
