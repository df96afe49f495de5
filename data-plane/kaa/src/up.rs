//! `kaa up`: every service of a Blueprint in this process, on the in-process bus, with SQLite
//! in a data directory. The same service code as a cluster, minus NATS and Kubernetes.
//!
//! The data directory also holds `admin-token`, the bearer token of the REST APIs: created on
//! first start (owner-only, never overwritten), reused afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kaa_blueprint::config::{ClientAuthMode, ClientCertMode, ServiceConfig};
use kaa_blueprint::{Blueprint, ServiceKind};
use kaa_bus::Bus;
use kaa_bus::metrics::Metrics;
use kaa_store::Store;

use crate::http::{AdminToken, Health};
use crate::live::{LiveConfigs, Outcome};
use crate::services::{Platform, ServiceContext};

/// The admin token's file name inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Run a whole Blueprint in this process (no NATS, no cluster needed).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The Blueprint file to run; without it, the bundled quickstart (blueprints/quickstart.yaml).
    blueprint: Option<PathBuf>,
    /// Where endpoints, tokens and metadata are kept between runs, and the admin token.
    #[arg(long, default_value = "kaa-data", env = "KAA_DATA_DIR")]
    data_dir: PathBuf,
    /// MQTT listener (plain TCP) of the gateway.
    #[arg(long, default_value = "127.0.0.1:1883", env = "KAA_MQTT_ADDR")]
    mqtt_addr: String,
    /// MQTT over TLS listener of the gateway, replacing the Blueprint's `mqtts.listen` (the
    /// Blueprint must configure `mqtts`).
    #[arg(long, env = "KAA_MQTTS_ADDR")]
    mqtts_addr: Option<String>,
    /// MQTT over WebSocket listener of the gateway, used when the Blueprint configures `ws`.
    #[arg(long, default_value = "127.0.0.1:8080", env = "KAA_WS_ADDR")]
    ws_addr: String,
    /// MQTT over secure WebSocket listener of the gateway, replacing the Blueprint's
    /// `wss.listen` (the Blueprint must configure `wss`).
    #[arg(long, env = "KAA_WSS_ADDR")]
    wss_addr: Option<String>,
    /// 1/KP over HTTPS listener of the gateway, replacing the Blueprint's `https.listen` (the
    /// Blueprint must configure `https`).
    #[arg(long, env = "KAA_HTTPS_ADDR")]
    https_addr: Option<String>,
    /// HTTP listener: REST APIs, `/health` and `/metrics`.
    #[arg(long, default_value = "127.0.0.1:8000", env = "KAA_HTTP_ADDR")]
    http_addr: String,
}

pub async fn up(args: Args) -> anyhow::Result<()> {
    // Read before it is loaded: an edit in between is then seen by the watch below.
    let started_with = match &args.blueprint {
        Some(path) => std::fs::read(path).unwrap_or_default(),
        None => Vec::new(),
    };
    let blueprint = match &args.blueprint {
        Some(path) => crate::render::load(path)?,
        None => Blueprint::quickstart(),
    };
    let (configs, listeners) = configs_of(&blueprint, &args)?;

    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
    let db = args.data_dir.join("kaa.db");
    let token_path = args.data_dir.join(ADMIN_TOKEN_FILE);
    let created = ensure_admin_token(&token_path)?;
    let admin_token = AdminToken::read(&token_path)?;
    if created {
        tracing::info!(path = %token_path.display(), "created the admin token");
    }
    let store = Store::open(&db)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let metrics = Metrics::new();
    let bus = Bus::in_process().with_metrics(&metrics);
    let context = ServiceContext::new(bus.clone(), Some(store.clone()), "local", metrics.clone());
    let platform = Platform::start(configs, &context).await?;
    if let Some(path) = &args.blueprint {
        let (path, args, live) = (path.clone(), args.clone(), platform.live().clone());
        let stop = context.shutdown.clone();
        tokio::spawn(crate::watch::file(
            path.clone(),
            started_with,
            BLUEPRINT_POLL,
            stop,
            move |_| {
                apply_blueprint(&path, &args, &live);
            },
        ));
    }

    let health = Health {
        bus,
        store: Some(store.clone()),
        live: Some(platform.live().clone()),
    };
    // The dashboard rides on `kaa up`'s one HTTP port (in a cluster: the `web` kind).
    let rest = platform.router().merge(crate::web::router());
    let app = crate::http::app(health, metrics, rest, Some(admin_token));
    let listener = crate::http::bind(&args.http_addr).await?;
    let http_addr = listener.local_addr()?;
    // The banner before serving: once /health answers, it is out.
    print_banner(&blueprint, &platform, listeners, http_addr, &token_path, created);
    let http = crate::http::serve(listener, app, context.shutdown.clone());

    crate::shutdown_signal().await;
    platform.stop(&context).await;
    let _ = http.await;
    store.close().await;
    Ok(())
}

/// How often `kaa up` reads the Blueprint file for edits.
const BLUEPRINT_POLL: Duration = Duration::from_millis(500);

/// Re-renders the edited Blueprint with the same checks as at start and applies it live; a
/// Blueprint that does not load, or a service config that is refused, leaves the running
/// configs as they were, and the log says why (naming the field).
fn apply_blueprint(path: &Path, args: &Args, live: &LiveConfigs) {
    let configs = crate::render::load(path).and_then(|blueprint| configs_of(&blueprint, args));
    match configs {
        Ok((configs, _)) => {
            let reports = live.apply(configs, true);
            let changed = reports.iter().filter(|r| r.outcome != Outcome::Unchanged).count();
            tracing::info!(path = %path.display(), changed, "Blueprint edited: applying it live");
            crate::live::log(&reports);
        }
        Err(e) => tracing::warn!(
            path = %path.display(),
            "Blueprint edit REJECTED, the running configs stay: {e:#}"
        ),
    }
}

/// The instances' configs for `blueprint`, with the gateway's listeners moved where `args` say.
fn configs_of(blueprint: &Blueprint, args: &Args) -> anyhow::Result<(Vec<ServiceConfig>, Listeners)> {
    // A `web` instance is for clusters: here every API and the dashboard share one listener.
    let mut configs: Vec<ServiceConfig> = kaa_blueprint::render(blueprint)?
        .into_iter()
        .map(|r| r.config)
        .filter(|c| c.kind() != ServiceKind::Web)
        .collect();
    let mut gateways = configs.iter_mut().filter_map(|c| match c {
        ServiceConfig::Kpc(kpc) => Some(kpc),
        _ => None,
    });
    let mqtts_flag = "--mqtts-addr (KAA_MQTTS_ADDR)";
    let wss_flag = "--wss-addr (KAA_WSS_ADDR)";
    let https_flag = "--https-addr (KAA_HTTPS_ADDR)";
    let mut listeners = Listeners::default();
    if let Some(kpc) = gateways.next() {
        kpc.mqtt.listen = args.mqtt_addr.clone();
        if let Some(ws) = &mut kpc.ws {
            ws.listen = args.ws_addr.clone();
        }
        // The TLS listeners move only where the Blueprint configures them (certificates needed).
        let moves = [
            (
                mqtts_flag,
                &args.mqtts_addr,
                "mqtts",
                kpc.mqtts.as_mut().map(|l| &mut l.listen),
            ),
            (
                wss_flag,
                &args.wss_addr,
                "wss",
                kpc.wss.as_mut().map(|l| &mut l.listen),
            ),
            (
                https_flag,
                &args.https_addr,
                "https",
                kpc.https.as_mut().map(|l| &mut l.listen),
            ),
        ];
        for (flag, addr, field, listen) in moves {
            match (listen, addr) {
                (Some(listen), Some(addr)) => *listen = addr.clone(),
                (None, Some(_)) => anyhow::bail!(
                    "{flag} is set but the Blueprint's kpc has no `{field}` listener to move: add \
                     `{field}` (certFile, keyFile, ...) to its config, see blueprints/secured.yaml"
                ),
                _ => {}
            }
        }
        listeners = Listeners {
            mqtt: kpc.mqtt.auth,
            mqtts: kpc.mqtts.as_ref().map(|t| (t.auth, t.tls.client_certs)),
            ws: kpc.ws.as_ref().map(|w| (w.auth, w.path.clone())),
            wss: kpc
                .wss
                .as_ref()
                .map(|w| (w.auth, w.tls.client_certs, w.path.clone())),
            https: kpc.https.as_ref().map(|h| (h.auth, h.tls.client_certs)),
        };
    } else {
        let flags = [
            (mqtts_flag, &args.mqtts_addr),
            (wss_flag, &args.wss_addr),
            (https_flag, &args.https_addr),
        ];
        if let Some((flag, _)) = flags.iter().find(|(_, addr)| addr.is_some()) {
            anyhow::bail!("{flag} is set but the Blueprint has no kpc service");
        }
    }
    anyhow::ensure!(
        gateways.next().is_none(),
        "`kaa up` runs one kpc instance; this Blueprint declares several"
    );
    Ok((configs, listeners))
}

/// How the gateway's listeners authenticate clients, for the banner.
#[derive(Debug, Clone, Default)]
struct Listeners {
    mqtt: ClientAuthMode,
    /// The TLS listener's client authentication and client certificate mode, if there is one.
    mqtts: Option<(ClientAuthMode, ClientCertMode)>,
    /// The WebSocket listener's client authentication and path.
    ws: Option<(ClientAuthMode, String)>,
    wss: Option<(ClientAuthMode, ClientCertMode, String)>,
    https: Option<(ClientAuthMode, ClientCertMode)>,
}

/// What the banner says about a listener's client authentication.
fn describe_auth(auth: ClientAuthMode) -> &'static str {
    match auth {
        ClientAuthMode::None => "client authentication is OFF: for local development only",
        ClientAuthMode::Password => "clients authenticate with username and password",
        ClientAuthMode::Certificate => "clients authenticate with a TLS client certificate",
        ClientAuthMode::PasswordOrCertificate => {
            "clients authenticate with a TLS client certificate or username and password"
        }
    }
}

fn describe_client_certs(certs: ClientCertMode) -> &'static str {
    match certs {
        ClientCertMode::None => "no client certificates",
        ClientCertMode::Optional => "client certificates optional",
        ClientCertMode::Required => "client certificates required",
    }
}

#[allow(clippy::print_stdout)] // the banner is the command's output
fn print_banner(
    blueprint: &Blueprint,
    platform: &Platform,
    listeners: Listeners,
    http: std::net::SocketAddr,
    token_path: &Path,
    created: bool,
) {
    let mqtt = platform
        .mqtt_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "(no kpc)".into());
    let (host, port) = platform
        .mqtt_addr()
        .map(|a| (a.ip().to_string(), a.port()))
        .unwrap_or_default();
    let mut more = String::new();
    if let (Some(addr), Some((auth, certs))) = (platform.mqtts_addr(), listeners.mqtts) {
        more += &format!(
            "\n  MQTTS {addr}   (TLS, {}; {})",
            describe_client_certs(certs),
            describe_auth(auth)
        );
    }
    if let (Some(addr), Some((auth, path))) = (platform.ws_addr(), &listeners.ws) {
        more += &format!(
            "\n  WS    ws://{addr}{path}   (MQTT over WebSocket; {})",
            describe_auth(*auth)
        );
    }
    if let (Some(addr), Some((auth, certs, path))) = (platform.wss_addr(), &listeners.wss) {
        more += &format!(
            "\n  WSS   wss://{addr}{path}   (MQTT over WebSocket and TLS, {}; {})",
            describe_client_certs(*certs),
            describe_auth(*auth)
        );
    }
    if let (Some(addr), Some((auth, certs))) = (platform.https_addr(), listeners.https) {
        more += &format!(
            "\n  HTTPS https://{addr}   (1/KP: POST /kp1/...; TLS, {}; {})",
            describe_client_certs(certs),
            describe_auth(auth)
        );
    }
    let app_version = blueprint
        .spec
        .applications
        .iter()
        .flat_map(|a| &a.versions)
        .find(|v| v.extensions.iter().any(|e| e == "epmx"))
        .map(|v| v.name.as_str())
        .unwrap_or("APP_VERSION");
    let token = shell_word(&token_path.display().to_string());
    let auth = format!(r#"-H "Authorization: Bearer $(cat {token})""#);
    let token_note = if created {
        "created now"
    } else {
        "kept from an earlier run"
    };
    // With client authentication on, the device first needs a credential (README: Securing devices).
    let (credential, login) = match listeners.mqtt {
        ClientAuthMode::None => (String::new(), ""),
        ClientAuthMode::Password | ClientAuthMode::PasswordOrCertificate => (
            format!(
                r#"
  curl -s -X POST http://{http}/ccm/api/v1/clients -H 'Content-Type: application/json' \
    {auth} \
    -d '{{"clientId":"my-meter","username":"my-meter","password":"CHANGE-ME"}}'"#
            ),
            " -u my-meter -P CHANGE-ME",
        ),
        ClientAuthMode::Certificate => (
            "\n  # plain MQTT takes certificate clients only: see the README, \"Securing devices\""
                .to_owned(),
            "",
        ),
    };
    println!(
        r#"kaa-rs is up: Blueprint `{name}`
  MQTT  {mqtt}   ({mqtt_auth}){more}
  HTTP  http://{http}   REST /epr/api/v1, /cm/api/v1, /ccm/api/v1, /epts/api/v1, /ecr/api/v1, /cex/api/v1, /bcx/api/v1, health /health, metrics /metrics
  web   http://{http}/   (dashboard: log in with the admin token)
  admin {token}   ({token_note}: every REST call needs `Authorization: Bearer <its content>`;
        keep it secret, delete it and restart to get a new one)

Connect a device (Ctrl-C stops the platform):
  curl -s -X POST http://{http}/epr/api/v1/endpoints -H 'Content-Type: application/json' \
    {auth} \
    -d '{{"appVersion":{{"name":"{app_version}"}},"endpointToken":"my-meter"}}'{credential}
  mosquitto_rr -h {host} -p {port}{login} -t kp1/{app_version}/epmx/my-meter/update/keys/1 \
    -e kp1/{app_version}/epmx/my-meter/update/keys/1/status -W 5 \
    -m '{{"model":"MySmartMeter A300","mac":"00-14-22-01-23-45"}}'
  curl -s {auth} \
    'http://{http}/epr/api/v1/endpoints?applicationVersionName={app_version}'"#,
        name = blueprint.metadata.name,
        mqtt_auth = describe_auth(listeners.mqtt),
    );
}

/// `word` as one shell word: unchanged when it has nothing the shell would interpret.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Creates the admin token file at `path` unless it exists; returns whether it was created.
///
/// A new token is 32 random bytes, base64url without padding. It is written to a private
/// temporary file (mode 0600 from the start, no window where others could read it) and then
/// hard-linked into place: the link appears complete or not at all, and never replaces a file
/// someone else put there meanwhile.
pub fn ensure_admin_token(path: &Path) -> anyhow::Result<bool> {
    use base64::Engine as _;

    if path.exists() {
        warn_if_readable_by_others(path);
        return Ok(false);
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes for the admin token: {e}"))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);

    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(ADMIN_TOKEN_FILE);
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let written =
        write_private(&tmp, format!("{token}\n").as_bytes()).and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(true),
        // Another `kaa up` on this data directory won the race: use its token.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot create the admin token file {}", path.display())),
    }
}

/// Writes a new file only its owner can read (fails if it exists).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the admin token file is readable by other users; `chmod 600` it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_token_is_created_once_private_and_random() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        assert!(ensure_admin_token(&path).unwrap());
        let token = std::fs::read_to_string(&path).unwrap();
        let token = token.strip_suffix('\n').unwrap();
        assert_eq!(token.len(), 43, "32 bytes in base64url without padding: {token}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Nothing but the token file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        assert!(!ensure_admin_token(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{token}\n"));

        let other = dir.path().join("other-token");
        ensure_admin_token(&other).unwrap();
        assert_ne!(std::fs::read_to_string(&other).unwrap(), format!("{token}\n"));
    }

    #[test]
    fn an_existing_token_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        std::fs::write(&path, "chosen-by-the-operator").unwrap();
        assert!(!ensure_admin_token(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "chosen-by-the-operator");
    }

    #[test]
    fn paths_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(shell_word("kaa-data/admin-token"), "kaa-data/admin-token");
        assert_eq!(shell_word("/my data/admin-token"), "'/my data/admin-token'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
