//! [`Postgres`]: a real PostgreSQL server per test, from the binaries of the Debian `postgresql`
//! package: `initdb` into a temporary directory, `postgres` on a free loopback port, one fresh
//! database. Killed and its directory removed on drop.
//!
//! PostgreSQL refuses to run as root, and tests here often do (containers): then the directory is
//! handed to the `postgres` user the package creates and the server runs as that user.

use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tempfile::TempDir;

use crate::{free_port, watch_log};

/// How long [`Postgres::start`] waits for the server to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How long dropping a [`Postgres`] waits for the server to exit after SIGQUIT.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The log line the server prints once it accepts connections (messages are in English: the
/// cluster is initialised with the C locale).
const READY_MARKER: &str = "database system is ready to accept connections";

/// How often a start is retried when another process took the free port first.
const PORT_ATTEMPTS: usize = 5;

/// The database each server gets, created empty.
const DATABASE: &str = "kaa";

/// What to run when PostgreSQL is missing.
const INSTALL_HINT: &str = "install it with `sudo apt-get install -y postgresql` (or run \
                            scripts/test-deps.sh)";

/// A PostgreSQL server listening on 127.0.0.1 with an empty database; stopped and deleted on drop.
#[derive(Debug)]
pub struct Postgres {
    url: String,
    port: u16,
    child: Child,
    // Dropped after the server stopped (fields drop in order after `Drop::drop`).
    _dir: TempDir,
}

impl Postgres {
    /// Initialises a cluster in a temporary directory, starts it (fsync off: test data need not
    /// survive a crash), and creates the database [`Postgres::url`] names.
    ///
    /// Panics with the apt command to install PostgreSQL when its binaries are missing, and with
    /// the server's log when it does not come up within the deadline.
    pub async fn start() -> Postgres {
        let bin = bindir();
        let owner = server_user();
        let dir = tempfile::Builder::new()
            .prefix("kaa-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a directory for PostgreSQL: {e}"));
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("cannot hand {} to the postgres user: {e}", dir.path().display()));
        }
        let data = dir.path().join("data");
        let out = as_server_user(Command::new(bin.join("initdb")), owner)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.join("initdb").display()));
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let mut attempt = 0;
        let mut server = loop {
            attempt += 1;
            let port = free_port();
            match spawn_server(&bin, &data, dir.path(), port, owner).await {
                Ok(child) => {
                    break Postgres {
                        url: format!("postgres://postgres@127.0.0.1:{port}/{DATABASE}"),
                        port,
                        child,
                        _dir: dir,
                    };
                }
                // free_port() cannot reserve the port (the server cannot bind port 0 and report
                // it, as nats-server does): another process may take it in between.
                Err(log) if attempt < PORT_ATTEMPTS && log.contains("could not bind") => continue,
                Err(log) => panic!("PostgreSQL did not start on port {port}. Its log:\n{log}"),
            }
        };
        server.create_database(&bin).await;
        server
    }

    /// `postgres://postgres@127.0.0.1:<port>/kaa`: the test's database, no password needed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `sql` in the test's database with `psql` and returns its unaligned output (`-At`: one
    /// row a line, columns separated by `|`), to check what the code under test stored.
    pub async fn psql(&self, sql: &str) -> String {
        let out = tokio::process::Command::new(bindir().join("psql"))
            .args([self.url(), "-v", "ON_ERROR_STOP=1", "-Atc", sql])
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    async fn create_database(&mut self, bin: &Path) {
        let out = tokio::process::Command::new(bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(DATABASE)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run createdb: {e}"));
        assert!(
            out.status.success(),
            "createdb {DATABASE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT (immediate shutdown) lets the server stop its backends and remove its System V
        // shared memory segment, which a SIGKILL would leak on every test run. SIGKILL stays the
        // fallback. Errors only mean the process is already gone.
        let quit = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        if quit.is_ok_and(|s| s.success()) {
            let give_up = std::time::Instant::now() + STOP_DEADLINE;
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `postgres` on `port` and waits for it to accept connections; its log on failure.
async fn spawn_server(
    bin: &Path,
    data: &Path,
    socket_dir: &Path,
    port: u16,
    owner: Option<(u32, u32)>,
) -> Result<Child, String> {
    // The server itself, not `pg_ctl`, so that the child we hold is the postmaster.
    let mut child = as_server_user(Command::new(bin.join("postgres")), owner)
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
        .arg("-k")
        .arg(socket_dir)
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
        .args(["-c", "shared_buffers=16MB", "-c", "lc_messages=C"])
        .current_dir(socket_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.join("postgres").display()))?;
    let ready = match child.stderr.take() {
        Some(stderr) => {
            watch_log(stderr, START_DEADLINE, READY_MARKER, |line| {
                line.contains(READY_MARKER).then_some(())
            })
            .await
        }
        None => Err("stderr was not captured".to_owned()),
    };
    match ready {
        Ok(()) => Ok(child),
        Err(log) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(log)
        }
    }
}

/// `command` set to run as `owner` (uid, gid), when given.
fn as_server_user(mut command: Command, owner: Option<(u32, u32)>) -> Command {
    // CommandExt::uid rather than `runuser -u postgres --`: runuser forks, so the child we hold
    // (and kill on drop) would be runuser, not the server. std also clears the supplementary
    // groups when root drops to another uid.
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
}

/// The `postgres` user's (uid, gid) when this process is root (which PostgreSQL refuses to run
/// as); `None` when the server can run as ourselves.
fn server_user() -> Option<(u32, u32)> {
    // The owner of /proc/self is this process's effective uid (std has no getuid).
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    if uid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    });
    Some(entry.unwrap_or_else(|| {
        panic!(
            "running as root, and PostgreSQL refuses root, but there is no `postgres` user to run it \
             as; the Debian package creates one: {INSTALL_HINT}"
        )
    }))
}

/// The directory holding `initdb` and `postgres`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout, where these are not on `PATH`).
fn bindir() -> PathBuf {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| has_server(d)) {
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries (initdb, postgres) were not found via `pg_config --bindir` \
             or in /usr/lib/postgresql/*/bin: {INSTALL_HINT}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;

    use super::*;
    use crate::eventually;

    #[tokio::test]
    async fn postgres_starts_with_a_database_and_is_removed_on_drop() {
        let pg = Postgres::start().await;
        assert_eq!(
            pg.url(),
            format!("postgres://postgres@127.0.0.1:{}/kaa", pg.port())
        );
        assert_eq!(pg.psql("SELECT current_database()").await, "kaa");
        let dir = pg._dir.path().to_owned();
        let port = pg.port();
        drop(pg);
        assert!(!dir.exists(), "the data directory is removed");
        eventually(Duration::from_secs(5), "the port to be closed", || async move {
            TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
                .then_some(())
        })
        .await;
    }
}
