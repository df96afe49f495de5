//! Harness for end-to-end tests: the real `kaa` binary, a real nats-server, real MQTT clients.
//!
//! # Layout
//! - [`Platform`]: a running platform, either `kaa up` (one process) or cluster mode (nats-server
//!   plus one `kaa run` process per service, state in SQLite files or on PostgreSQL), with its MQTT and HTTP addresses and the admin token
//!   its REST calls send.
//! - [`Device`] (from kaa-testkit): an MQTT client that never subscribes, like the official Kaa client.
//! - [`provide`]: `kaa-operator provide` (the config provider for a Blueprint file) and its events;
//!   [`Platform::cluster_provided`] runs cluster mode following it.
//!
//! The `kaa` binary is `$KAA_BIN` or `target/debug/kaa`, `kaa-operator` (for [`provide`]) is
//! `$KAA_OPERATOR_BIN` or `target/debug/kaa-operator` (`make test` builds both first).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test harness: fail loudly

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

pub mod pki;
pub mod provide;

use kaa_testkit::{NatsServer, Postgres, free_port};
use serde_json::{Value, json};

pub use kaa_testkit::Device;

pub use kaa_testkit::DEADLINE;

/// The `kaa` binary under test.
pub fn kaa_bin() -> PathBuf {
    binary("KAA_BIN", "kaa")
}

/// The binary `$env_var` names, else `target/debug/{name}` (built by `cargo build -p {name}`).
fn binary(env_var: &str, name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_var) {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/debug/{name}"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p {name}` first (`make test` does)",
        path.display()
    );
    path
}

/// The bundled quickstart Blueprint's text.
fn quickstart() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../blueprints/quickstart.yaml"))
        .unwrap()
}

/// The quickstart Blueprint plus a `web` instance: the dashboard in cluster mode.
pub fn quickstart_with_web() -> String {
    format!("{}    - kind: web\n", quickstart())
}

/// The `RUST_LOG` of the processes the harness starts.
pub const DEFAULT_LOG_FILTER: &str = "info,kaa_kpc=debug";

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
        Self::spawn_logging(name, dir, args, DEFAULT_LOG_FILTER)
    }

    /// Like [`Process::spawn`] with `RUST_LOG` set to `log_filter`.
    pub fn spawn_logging(name: &str, dir: &Path, args: &[&str], log_filter: &str) -> Process {
        Self::spawn_in(name, dir, None, args, log_filter)
    }

    /// Like [`Process::spawn_logging`], run from `cwd` (where relative paths resolve).
    pub fn spawn_in(name: &str, dir: &Path, cwd: Option<&Path>, args: &[&str], log_filter: &str) -> Process {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(kaa_bin());
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let child = command
            .args(args)
            .env("RUST_LOG", log_filter)
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

    /// The name it was started with (its log file's name).
    pub fn name(&self) -> &str {
        &self.name
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
    /// Every gateway's MQTT port (`mqtt_port` is the first).
    pub mqtt_ports: Vec<u16>,
    /// The MQTT over TLS port, when the Blueprint has an `mqtts` listener (`kaa up` only).
    pub mqtts_port: Option<u16>,
    /// The MQTT over WebSocket port (path `/mqtt`), used when the Blueprint has a `ws` listener
    /// (the quickstart does); in cluster mode, the first gateway's.
    pub ws_port: u16,
    /// The MQTT over secure WebSocket port, when the Blueprint has `wss` (`kaa up` only).
    pub wss_port: Option<u16>,
    /// The 1/KP over HTTPS port, when the Blueprint has `https` (`kaa up` only).
    pub https_port: Option<u16>,
    /// The HTTP base of the REST APIs (EPR's process in cluster mode).
    pub http: String,
    /// The HTTP base of the credential service's REST API (`http` under `kaa up`).
    pub cm_http: String,
    /// Cluster mode: each service instance's HTTP base (empty under `kaa up`: all on `http`), and
    /// each gateway replica's (`kpc-0`, `kpc-1`, ...) when there are several; a `web` instance's
    /// is the dashboard's.
    pub service_http: BTreeMap<String, String>,
    pub processes: Vec<Process>,
    /// Cluster mode following a config provider ([`Platform::cluster_provided`]).
    pub provider: Option<provide::ConfigProvider>,
    pub nats: Option<NatsServer>,
    /// The database server of cluster mode on PostgreSQL ([`Platform::cluster_on_postgres`]).
    pub postgres: Option<Postgres>,
    pub dir: tempfile::TempDir,
    /// The admin API's bearer token, sent by every REST helper below.
    pub admin_token: String,
}

impl Platform {
    /// `kaa up` with the bundled quickstart Blueprint.
    pub async fn up() -> Platform {
        Self::up_in(tempfile::tempdir().unwrap()).await
    }

    /// `kaa up` with the data directory `{dir}/data` (reused if it exists).
    pub async fn up_in(dir: tempfile::TempDir) -> Platform {
        Self::launch_up(dir, None, DEFAULT_LOG_FILTER).await
    }

    /// `kaa up` with `RUST_LOG` set to `log_filter`.
    pub async fn up_logging(log_filter: &str) -> Platform {
        Self::launch_up(tempfile::tempdir().unwrap(), None, log_filter).await
    }

    /// `kaa up BLUEPRINT` (written to a file first).
    pub async fn up_with(blueprint: &str) -> Platform {
        Self::launch_up(tempfile::tempdir().unwrap(), Some(blueprint), DEFAULT_LOG_FILTER).await
    }

    /// `kaa up BLUEPRINT_FILE` run from `dir` (relative paths in the Blueprint, such as TLS
    /// files, resolve there), with the TLS listeners moved to free ports: the Blueprint must have
    /// `mqtts`, `wss` and `https`, as blueprints/secured.yaml does.
    pub async fn up_from(dir: tempfile::TempDir, blueprint_file: &Path) -> Platform {
        let (mqtts_port, wss_port, https_port) = (free_port(), free_port(), free_port());
        let file = blueprint_file.display().to_string();
        let mqtts = format!("127.0.0.1:{mqtts_port}");
        let wss = format!("127.0.0.1:{wss_port}");
        let https = format!("127.0.0.1:{https_port}");
        let extra = [
            file.as_str(),
            "--mqtts-addr",
            &mqtts,
            "--wss-addr",
            &wss,
            "--https-addr",
            &https,
        ];
        let mut platform = Self::launch(dir, None, &extra, DEFAULT_LOG_FILTER).await;
        platform.mqtts_port = Some(mqtts_port);
        platform.wss_port = Some(wss_port);
        platform.https_port = Some(https_port);
        platform
    }

    /// The data directory `kaa up` runs with.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn launch_up(dir: tempfile::TempDir, blueprint: Option<&str>, log_filter: &str) -> Platform {
        Self::launch(dir, blueprint, &[], log_filter).await
    }

    /// `kaa up` with the data directory `{dir}/data`, the Blueprint text `blueprint` (if any) and
    /// `extra` arguments; with `extra` it runs from `dir`.
    async fn launch(
        dir: tempfile::TempDir,
        blueprint: Option<&str>,
        extra: &[&str],
        log_filter: &str,
    ) -> Platform {
        let (mqtt_port, http_port, ws_port) = (free_port(), free_port(), free_port());
        let data = dir.path().join("data");
        let mqtt = format!("127.0.0.1:{mqtt_port}");
        let http = format!("127.0.0.1:{http_port}");
        let mut args = vec!["up".to_owned(), "--data-dir".into(), data.display().to_string()];
        args.extend(["--mqtt-addr".into(), mqtt, "--http-addr".into(), http.clone()]);
        // Always: parallel tests must never meet on the default port 8080.
        args.extend(["--ws-addr".into(), format!("127.0.0.1:{ws_port}")]);
        if let Some(text) = blueprint {
            let path = dir.path().join("blueprint.yaml");
            std::fs::write(&path, text).unwrap();
            args.push(path.display().to_string());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cwd = (!extra.is_empty()).then(|| dir.path());
        let up = Process::spawn_in("kaa-up", dir.path(), cwd, &args, log_filter);
        let http = format!("http://{http}");
        wait_healthy(&http, &up).await;
        // `kaa up` creates the token before it starts listening, so it exists once /health answers.
        let token_file = data.join("admin-token");
        let admin_token = std::fs::read_to_string(&token_file)
            .unwrap_or_else(|e| panic!("{}: {e}", token_file.display()))
            .trim()
            .to_owned();
        Platform {
            mqtt_port,
            mqtt_ports: vec![mqtt_port],
            mqtts_port: None,
            ws_port,
            wss_port: None,
            https_port: None,
            cm_http: http.clone(),
            service_http: BTreeMap::new(),
            http,
            processes: vec![up],
            provider: None,
            nats: None,
            postgres: None,
            dir,
            admin_token,
        }
    }

    /// Cluster mode: a real nats-server and one `kaa run` process per service of the quickstart.
    pub async fn cluster() -> Platform {
        Self::cluster_with(&quickstart(), 1).await
    }

    /// [`Platform::cluster`] with EPR and CM sharing one database on a fresh PostgreSQL server
    /// (`kaa run --database postgres://...`) instead of an SQLite file each.
    pub async fn cluster_on_postgres() -> Platform {
        let postgres = Postgres::start().await;
        let mut platform =
            Self::launch_cluster(&quickstart(), 1, Some(postgres.url()), false, DEFAULT_LOG_FILTER).await;
        platform.postgres = Some(postgres);
        platform
    }

    /// Cluster mode for `blueprint`: one `kaa run` process per rendered service instance, each
    /// with its own database file (its single kpc service run as `kpcs` processes, replica ids
    /// `kpc-0`, `kpc-1`, ..., each on its own loopback port: `mqtt_ports`).
    pub async fn cluster_with(blueprint: &str, kpcs: usize) -> Platform {
        Self::launch_cluster(blueprint, kpcs, None, false, DEFAULT_LOG_FILTER).await
    }

    /// [`Platform::cluster_with`] where every process follows `kaa-operator provide` serving
    /// `blueprint` (`kaa run --config-url`): edit it with `provider.edit`. The gateways listen on
    /// ports of their own choosing (`127.0.0.1:0`), so that all replicas run the same config.
    pub async fn cluster_provided(blueprint: &str, kpcs: usize) -> Platform {
        let any_port = "\n          listen: 127.0.0.1:0\n";
        let blueprint = blueprint
            .replacen("\n        mqtt:\n", &format!("\n        mqtt:{any_port}"), 1)
            .replacen("\n        ws:\n", &format!("\n        ws:{any_port}"), 1);
        Self::launch_cluster(&blueprint, kpcs, None, true, DEFAULT_LOG_FILTER).await
    }

    /// [`Platform::cluster_with`] with `RUST_LOG` set to `log_filter` in every process.
    pub async fn cluster_logging(blueprint: &str, kpcs: usize, log_filter: &str) -> Platform {
        Self::launch_cluster(blueprint, kpcs, None, false, log_filter).await
    }

    /// [`Platform::up_with`] with `RUST_LOG` set to `log_filter`.
    pub async fn up_with_logging(blueprint: &str, log_filter: &str) -> Platform {
        Self::launch_up(tempfile::tempdir().unwrap(), Some(blueprint), log_filter).await
    }

    /// Cluster mode with the stateful services on `database_url`, or on an SQLite file each; with
    /// `provided`, every process follows a config provider; `RUST_LOG` is `log_filter`.
    async fn launch_cluster(
        blueprint: &str,
        kpcs: usize,
        database_url: Option<&str>,
        provided: bool,
        log_filter: &str,
    ) -> Platform {
        let nats = NatsServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let provider = match provided {
            true => Some(provide::ConfigProvider::start(dir.path(), blueprint, &nats.url).await),
            false => None,
        };
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
        // What the operator will mount from a Secret: one token file for every process.
        let admin_token = format!("cluster-admin-{}", free_port());
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, format!("{admin_token}\n")).unwrap();

        let mut processes = Vec::new();
        let mut mqtt_ports = Vec::new();
        let mut ws_ports = Vec::new();
        let (mut http, mut cm_http) = (String::new(), String::new());
        // Every rendered service: the credential service first (EPR provisions tokens through it,
        // KPC validates with it), then EPR, then the other services, the gateways last.
        let mut rendered: Vec<(String, String)> = std::fs::read_dir(&configs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let config: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                let instance = p.file_stem().unwrap().to_str().unwrap().to_owned();
                (config["kind"].as_str().unwrap().to_owned(), instance)
            })
            .filter(|(kind, _)| kind != "kpc")
            .collect();
        let rank = |kind: &str| match kind {
            "cm" => 0,
            "epr" => 1,
            // The dashboard's proxy last: it is pointed at the processes started before it.
            "web" => 3,
            _ => 2,
        };
        rendered.sort_by(|a, b| (rank(&a.0), &a.1).cmp(&(rank(&b.0), &b.1)));
        let services = rendered
            .into_iter()
            .map(|(kind, instance)| (kind, instance.clone(), instance))
            .chain((0..kpcs).map(|i| ("kpc".to_owned(), "kpc".to_owned(), format!("kpc-{i}"))));
        let mut service_http = BTreeMap::new();
        for (kind, instance, replica) in services {
            let service = kind.as_str();
            let port = free_port();
            let mut config = configs.join(format!("{instance}.json"));
            let db = match database_url {
                Some(url) => url.to_owned(),
                None => dir.path().join(format!("{instance}.db")).display().to_string(),
            };
            let addr = format!("127.0.0.1:{port}");
            if kind == "kpc" && provider.is_none() {
                // Each gateway replica on its own port: the rendered config with another listener.
                let mqtt_port = free_port();
                let mut kpc: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
                kpc["mqtt"]["listen"] = json!(format!("127.0.0.1:{mqtt_port}"));
                if let Some(ws) = kpc.get_mut("ws") {
                    let ws_port = free_port();
                    ws["listen"] = json!(format!("127.0.0.1:{ws_port}"));
                    ws_ports.push(ws_port);
                }
                config = configs.join(format!("{replica}.json"));
                std::fs::write(&config, kpc.to_string()).unwrap();
                mqtt_ports.push(mqtt_port);
            }
            if kind == "web" {
                // Each upstream where its process listens, as the operator points it at Services.
                let mut web: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
                for upstream in web["upstreams"].as_array_mut().unwrap() {
                    let instance = upstream["instance"].as_str().unwrap();
                    upstream["url"] = json!(service_http[instance]);
                }
                config = configs.join(format!("{instance}.local.json"));
                std::fs::write(&config, web.to_string()).unwrap();
            }
            let mut args = vec![
                "run",
                &kind,
                "--config",
                config.to_str().unwrap(),
                "--nats-url",
                &nats.url,
            ];
            args.extend(["--http-addr", &addr]);
            args.extend(["--admin-token-file", token_file.to_str().unwrap()]);
            let config_url = provider.as_ref().map(|p| p.config_url(&instance));
            if let (Some(url), Some(p)) = (&config_url, &provider) {
                args.extend([
                    "--config-url",
                    url,
                    "--config-token-file",
                    p.token_file.to_str().unwrap(),
                ]);
            }
            if service == "kpc" {
                args.extend(["--replica-id", &replica]);
            } else {
                // Each service its own database (stateless ones just leave it empty).
                args.extend(["--database", &db]);
            }
            let name = match kind.as_str() {
                "kpc" if kpcs > 1 => format!("kaa-run-{replica}"),
                _ => format!("kaa-run-{instance}"),
            };
            let process = Process::spawn_logging(&name, dir.path(), &args, log_filter);
            let base = format!("http://{addr}");
            wait_healthy(&base, &process).await;
            if kind == "kpc" && provider.is_some() {
                let ports = provide::listening(&process).await;
                mqtt_ports.push(ports["mqtt"]);
                ws_ports.extend(ports.get("ws"));
            }
            processes.push(process);
            match service {
                "epr" => http = base.clone(),
                "cm" => cm_http = base.clone(),
                _ => {}
            }
            if replica != instance {
                service_http.insert(replica, base.clone());
            }
            service_http.insert(instance, base);
        }
        Platform {
            mqtt_port: mqtt_ports[0],
            mqtt_ports,
            mqtts_port: None,
            ws_port: ws_ports.first().copied().unwrap_or_default(),
            wss_port: None,
            https_port: None,
            http,
            cm_http,
            service_http,
            processes,
            provider,
            nats: Some(nats),
            postgres: None,
            dir,
            admin_token,
        }
    }

    /// Registers an endpoint with a token over REST; returns its endpoint id.
    pub async fn register(&self, app_version: &str, token: &str) -> String {
        let body = json!({ "appVersion": { "name": app_version }, "endpointToken": token });
        let (status, created) = self
            .request(reqwest::Method::POST, "/epr/api/v1/endpoints", Some(&body))
            .await;
        assert_eq!(status, 201, "register {token}: {created}");
        created["endpointId"]
            .as_str()
            .expect("endpointId in the 201 body")
            .to_owned()
    }

    /// GET a REST path (relative to the HTTP base) and return status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// A REST call with the admin token and an optional JSON body; returns status and JSON body
    /// (`Null` when the body is not JSON). Paths under `/cm/` and `/ccm/` go to the credential
    /// service, others to the service kind their first segment names (EPR when none does).
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let base = self.base_for(path);
        let mut request = reqwest::Client::new()
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The HTTP base serving `path`: in cluster mode the process of the service that owns the
    /// path's API (`/ecr/...?name=X`: the CMX instance serving configuration X).
    pub fn base_for(&self, path: &str) -> &str {
        if path.starts_with("/cm/") || path.starts_with("/ccm/") {
            return &self.cm_http;
        }
        let instance = match path.split('/').nth(1) {
            Some("ecr") => match path.split_once("name=") {
                Some((_, rest)) => match rest.split('&').next() {
                    Some("default") | None => "cmx",
                    Some(name) => name,
                },
                None => "cmx",
            },
            Some(api @ ("cex" | "bcx" | "epts")) => api,
            _ => return &self.http,
        };
        self.service_http.get(instance).unwrap_or(&self.http)
    }

    /// A new device connection to the gateway.
    pub async fn device(&self, client_id: &str) -> Device {
        Device::connect(self.mqtt_port, client_id).await
    }
}

/// Endpoint metadata without the connectivity keys EPL maintains (`connected`, `connectivity_ts`):
/// what the device itself wrote.
pub fn without_connectivity(mut metadata: Value) -> Value {
    if let Some(map) = metadata.as_object_mut() {
        map.remove("connected");
        map.remove("connectivity_ts");
    }
    metadata
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
        "    - kind: kpc\n      config:\n        mqtt:\n",
        &format!("    - kind: kpc\n      config:\n        mqtt:\n          listen: 127.0.0.1:{port}\n"),
    )
}
