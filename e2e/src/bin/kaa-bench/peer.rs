//! The peer of the comparison: Mosquitto (the Debian package) on a free loopback port with a
//! generated configuration, plus `kaa-responder` answering the requests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A child process killed when dropped.
#[derive(Debug)]
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running Mosquitto plus responder.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) mqtt_port: u16,
    pub(crate) broker_pid: u32,
    pub(crate) count_file: PathBuf,
    // Dropped in this order: the responder first, then the broker.
    responder: Guard,
    _broker: Guard,
}

/// The broker's configuration: anonymous clients on loopback (as the bench Blueprint's gateway),
/// no persistence (kaa-rs's `kaa up` stores in SQLite; Mosquitto would only add disk work),
/// TCP_NODELAY, and queues large enough for the load's windows (the default of 20 messages in
/// flight per client would throttle the single responder connection).
fn config(port: u16) -> String {
    format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         set_tcp_nodelay true\n\
         max_inflight_messages 1000\n\
         max_queued_messages 100000\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n"
    )
}

/// The Mosquitto binary: `$MOSQUITTO`, or the Debian package's.
fn mosquitto_bin() -> PathBuf {
    std::env::var_os("MOSQUITTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto"))
}

impl Peer {
    /// The broker's and the responder's process ids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        vec![self.broker_pid, self.responder.0.id()]
    }

    pub(crate) async fn start(dir: &Path, responder_bin: &Path) -> anyhow::Result<Peer> {
        let mqtt_port = kaa_testkit::free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, config(mqtt_port))?;
        let log = std::fs::File::create(dir.join("mosquitto.log"))?;
        let bin = mosquitto_bin();
        let broker = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} (apt-get install mosquitto)", bin.display()))?;
        let broker = Guard(broker);
        let broker_pid = broker.0.id();
        wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", mqtt_port)).is_ok()
        })
        .await
        .context("Mosquitto did not listen within 10 s (see mosquitto.log)")?;
        let count_file = dir.join("responder-count");
        let _ = std::fs::remove_file(&count_file);
        let log = std::fs::File::create(dir.join("responder.log"))?;
        let responder = Command::new(responder_bin)
            .args(["--mqtt", &format!("127.0.0.1:{mqtt_port}"), "--count-file"])
            .arg(&count_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", responder_bin.display()))?;
        let responder = Guard(responder);
        // The count file appears once the responder's subscription is in place.
        wait_for(Duration::from_secs(10), || count_file.exists())
            .await
            .context("kaa-responder did not subscribe within 10 s (see responder.log)")?;
        Ok(Peer {
            mqtt_port,
            broker_pid,
            count_file,
            responder,
            _broker: broker,
        })
    }
}

/// Polls `ready` every 20 ms until it holds or `limit` passes.
pub(crate) async fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("not ready after {limit:?}")
}
