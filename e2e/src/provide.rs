//! The config provider without Kubernetes: `kaa-operator provide` on a Blueprint file, the JSON
//! lines it prints (its events), and edits of the file.
//!
//! The `kaa-operator` binary is `$KAA_OPERATOR_BIN` or `target/debug/kaa-operator`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use kaa_testkit::eventually;
use serde_json::Value;

use crate::DEADLINE;

/// The `kaa-operator` binary under test.
pub fn operator_bin() -> PathBuf {
    crate::binary("KAA_OPERATOR_BIN", "kaa-operator")
}

/// A running `kaa-operator provide`; killed when dropped (its log printed if the test failed).
#[derive(Debug)]
pub struct ConfigProvider {
    child: Child,
    /// The Blueprint file it serves; change it with [`ConfigProvider::edit`].
    pub blueprint: PathBuf,
    /// The config-reader token's file, for `kaa run --config-token-file`.
    pub token_file: PathBuf,
    /// The HTTP API's base (`http://127.0.0.1:<port>`).
    pub url: String,
    out: PathBuf,
    log: PathBuf,
}

impl ConfigProvider {
    /// Writes `blueprint` to `dir/blueprint.yaml` and serves it, announcing on `nats_url`.
    pub async fn start(dir: &Path, blueprint: &str, nats_url: &str) -> ConfigProvider {
        let path = dir.join("blueprint.yaml");
        std::fs::write(&path, blueprint).unwrap();
        let token_file = dir.join("config-token");
        let (out, log) = (dir.join("provide.out"), dir.join("provide.log"));
        let child = Command::new(operator_bin())
            .args(["provide", "--addr", "127.0.0.1:0", "--nats-url", nats_url])
            .arg("--blueprint")
            .arg(&path)
            .arg("--token-file")
            .arg(&token_file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start kaa-operator provide: {e}"));
        let mut provider = ConfigProvider {
            child,
            blueprint: path,
            token_file,
            url: String::new(),
            out,
            log,
        };
        let listening = provider.event("listening", |_| true).await;
        provider.url = listening["url"].as_str().unwrap().to_owned();
        provider
    }

    /// Every line it printed so far.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The first event named `name` that `matches`, waiting for it.
    pub async fn event(&self, name: &str, matches: impl Fn(&Value) -> bool) -> Value {
        eventually(
            DEADLINE,
            &format!("a `{name}` event from kaa-operator provide"),
            || {
                let found = self
                    .events()
                    .into_iter()
                    .find(|e| e["event"] == name && matches(e));
                async move { found }
            },
        )
        .await
    }

    /// The latest `rollout` line.
    pub fn rollout(&self) -> Option<Value> {
        self.events().into_iter().rev().find(|e| e["event"] == "rollout")
    }

    /// Replaces the Blueprint file (whole: a reader never sees half of it).
    pub fn edit(&self, blueprint: &str) {
        let staged = self.blueprint.with_extension("yaml.new");
        std::fs::write(&staged, blueprint).unwrap();
        std::fs::rename(&staged, &self.blueprint).unwrap();
    }

    /// The config URL of `instance`, for `kaa run --config-url`.
    pub fn config_url(&self, instance: &str) -> String {
        format!("{}/tekton/api/v1/service-instances/{instance}/config", self.url)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file)
            .unwrap()
            .trim()
            .to_owned()
    }
}

impl Drop for ConfigProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let out = std::fs::read_to_string(&self.out).unwrap_or_default();
            eprintln!("----- kaa-operator provide -----\n{out}{log}");
        }
    }
}

/// The ports a gateway process logged that it listens on, by listener (`mqtt`, `ws`, ...): a
/// gateway told to listen on port 0 gets its ports from the system.
pub async fn listening(process: &crate::Process) -> BTreeMap<String, u16> {
    eventually(DEADLINE, &format!("{} to log its ports", process.name()), || {
        let ports = logged_ports(&process.log());
        async move { ports.contains_key("mqtt").then_some(ports) }
    })
    .await
}

fn logged_ports(log: &str) -> BTreeMap<String, u16> {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("KPC listening"))
        .filter_map(|line| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                    .map(|v| v.trim_matches('"').to_owned())
            };
            let port = field("addr")?.rsplit_once(':')?.1.parse().ok()?;
            Some((field("listener")?, port))
        })
        .collect()
}

/// `text` without terminal colour codes (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            plain.push(c);
        }
    }
    plain
}
