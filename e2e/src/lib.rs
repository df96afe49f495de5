//! Harness for end-to-end tests: the real `kaa` binary, a real nats-server, real MQTT clients.
//!
//! # Layout
//! - [`Platform`]: a running platform, either `kaa up` (one process) or cluster mode (nats-server
//!   plus one `kaa run` process per service), with its MQTT and HTTP addresses.
//! - [`Device`] (from kaa-testkit): an MQTT client that never subscribes, like the official Kaa client.
//!
//! The `kaa` binary is `$KAA_BIN` or `target/debug/kaa` (`make test` builds it first).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test harness: fail loudly

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use kaa_testkit::{NatsServer, free_port};
use serde_json::{Value, json};

pub use kaa_testkit::Device;

pub use kaa_testkit::DEADLINE;

/// The `kaa` binary under test.
pub fn kaa_bin() -> PathBuf {
    if let Ok(path) = std::env::var("KAA_BIN") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/kaa");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p kaa` first (`make test` does)",
        path.display()
    );
    path
}

/// A child process that is stopped with SIGTERM (then killed) when dropped; its stderr goes to a
/// log file that is printed if the test fails.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, dir: &Path, args: &[&str]) -> Process {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(kaa_bin())
            .args(args)
            .env("RUST_LOG", "info,kaa_kpc=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit (killing it after the deadline).
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = std::time::Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.is_running() {
            self.terminate();
        }
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log());
        }
    }
}

/// A running platform under test.
#[derive(Debug)]
pub struct Platform {
    pub mqtt_port: u16,
    pub http: String,
    pub processes: Vec<Process>,
    pub nats: Option<NatsServer>,
    pub dir: tempfile::TempDir,
}

impl Platform {
    /// `kaa up` with the bundled quickstart Blueprint.
    pub async fn up() -> Platform {
        Self::up_in(tempfile::tempdir().unwrap()).await
    }

    /// `kaa up` with the data directory `{dir}/data` (reused if it exists).
    pub async fn up_in(dir: tempfile::TempDir) -> Platform {
        Self::launch_up(dir, None).await
    }

    /// `kaa up BLUEPRINT` (written to a file first).
    pub async fn up_with(blueprint: &str) -> Platform {
        Self::launch_up(tempfile::tempdir().unwrap(), Some(blueprint)).await
    }

    async fn launch_up(dir: tempfile::TempDir, blueprint: Option<&str>) -> Platform {
        let (mqtt_port, http_port) = (free_port(), free_port());
        let data = dir.path().join("data");
        let mqtt = format!("127.0.0.1:{mqtt_port}");
        let http = format!("127.0.0.1:{http_port}");
        let mut args = vec!["up".to_owned(), "--data-dir".into(), data.display().to_string()];
        args.extend(["--mqtt-addr".into(), mqtt, "--http-addr".into(), http.clone()]);
        if let Some(text) = blueprint {
            let path = dir.path().join("blueprint.yaml");
            std::fs::write(&path, text).unwrap();
            args.push(path.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let up = Process::spawn("kaa-up", dir.path(), &args);
        let http = format!("http://{http}");
        wait_healthy(&http, &up).await;
        Platform {
            mqtt_port,
            http,
            processes: vec![up],
            nats: None,
            dir,
        }
    }

    /// Cluster mode: a real nats-server and one `kaa run` process per service of the quickstart.
    pub async fn cluster() -> Platform {
        let nats = NatsServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mqtt_port = free_port();
        let blueprint = quickstart_with_mqtt(mqtt_port);
        let bp_path = dir.path().join("blueprint.yaml");
        std::fs::write(&bp_path, blueprint).unwrap();
        let configs = dir.path().join("configs");
        let status = Command::new(kaa_bin())
            .args([
                "render",
                bp_path.to_str().unwrap(),
                "--out",
                configs.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(status.success(), "kaa render failed");

        let mut processes = Vec::new();
        let mut http = String::new();
        for service in ["epr", "epmx", "kpc"] {
            let port = free_port();
            let config = configs.join(format!("{service}.json"));
            let db = dir.path().join("epr.db");
            let addr = format!("127.0.0.1:{port}");
            let mut args = vec![
                "run",
                service,
                "--config",
                config.to_str().unwrap(),
                "--nats-url",
                &nats.url,
            ];
            args.extend(["--http-addr", &addr]);
            if service == "epr" {
                args.extend(["--database", db.to_str().unwrap()]);
            }
            let process = Process::spawn(&format!("kaa-run-{service}"), dir.path(), &args);
            let base = format!("http://{addr}");
            wait_healthy(&base, &process).await;
            processes.push(process);
            if service == "epr" {
                http = base;
            }
        }
        Platform {
            mqtt_port,
            http,
            processes,
            nats: Some(nats),
            dir,
        }
    }

    /// Registers an endpoint with a token over REST; returns its endpoint id.
    pub async fn register(&self, app_version: &str, token: &str) -> String {
        let body = json!({ "appVersion": { "name": app_version }, "endpointToken": token });
        let response = reqwest::Client::new()
            .post(format!("{}/epr/api/v1/endpoints", self.http))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "register {token}: {:?}",
            response.text().await
        );
        let created: Value = response.json().await.unwrap();
        created["endpointId"]
            .as_str()
            .expect("endpointId in the 201 body")
            .to_owned()
    }

    /// GET a REST path (relative to the HTTP base) and return status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.http))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A new device connection to the gateway.
    pub async fn device(&self, client_id: &str) -> Device {
        Device::connect(self.mqtt_port, client_id).await
    }
}

/// Waits until `{base}/health` answers 200 (the process's log is shown if it never does).
async fn wait_healthy(base: &str, process: &Process) {
    let client = reqwest::Client::new();
    let url = format!("{base}/health");
    let answered = tokio::time::timeout(DEADLINE, async {
        loop {
            if client.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "{url} did not answer 200 within {DEADLINE:?}; log of {}:\n{}",
        process.name,
        process.log()
    );
}

/// The quickstart Blueprint with the gateway on a given loopback port.
pub fn quickstart_with_mqtt(port: u16) -> String {
    let quickstart =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../blueprints/quickstart.yaml"))
            .unwrap();
    quickstart.replace(
        "    - kind: kpc\n",
        &format!("    - kind: kpc\n      config:\n        mqtt:\n          listen: 127.0.0.1:{port}\n"),
    )
}
