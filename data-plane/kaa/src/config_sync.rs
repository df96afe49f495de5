//! How a `kaa run` replica keeps its config current (17/SCMP, see docs in README "Changing
//! configuration while it runs"):
//!
//! - with a config provider (`--config-url`): fetch the instance's config at start, again on every
//!   17/SCMP announcement (the instance's own subject and the provider's broadcast), and every
//!   `--config-check-secs` in case an announcement was missed;
//! - without one: watch the `--config` file (a ConfigMap volume) for edits.
//!
//! Each fetched or edited config is offered to [`LiveConfigs::apply`], and the outcome is reported
//! as a [`ConfigAppliedEvent`] on the bus: after each attempt, and every [`REPORT_EVERY`] so that
//! the provider learns of replicas that started after its last announcement.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use kaa_blueprint::config::ServiceConfig;
use kaa_bus::{Bus, Subscription};
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::scmp::{ConfigAppliedEvent, PROVIDER};
use kaa_protocol::subject;
use tokio_util::sync::CancellationToken;

use crate::live::LiveConfigs;

/// How often a replica reports the version it runs even when nothing changed.
pub const REPORT_EVERY: Duration = Duration::from_secs(30);
/// How often the `--config` file is read for edits (no provider).
const FILE_POLL: Duration = Duration::from_secs(1);
/// How long one fetch from the provider may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The provider's instance config path (Kaa Tekton's shape).
fn instance_path(instance: &str) -> String {
    format!("/tekton/api/v1/service-instances/{instance}/config")
}

/// The config provider of one instance: where to fetch, with which token.
#[derive(Debug, Clone)]
pub struct Provider {
    client: reqwest::Client,
    url: String,
    token_file: Option<PathBuf>,
}

impl Provider {
    /// `base` is the provider's URL (`http://kaa-operator:8090`) or the instance's config URL
    /// itself; the token is read from `token_file` at each fetch, so a rotated Secret is picked up.
    pub fn new(base: &str, instance: &str, token_file: Option<PathBuf>) -> anyhow::Result<Provider> {
        let base = base.trim_end_matches('/');
        let url = match base.contains("/tekton/") {
            true => base.to_owned(),
            false => format!("{base}{}", instance_path(instance)),
        };
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .context("cannot build the config provider's HTTP client")?;
        Ok(Provider {
            client,
            url,
            token_file,
        })
    }

    /// The instance's current config, as the provider has it.
    pub async fn fetch(&self) -> anyhow::Result<ServiceConfig> {
        let mut request = self.client.get(&self.url);
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the config token file {}", path.display()))?;
            request = request.bearer_auth(token.trim());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the config provider at {}", self.url))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("the config provider at {} did not answer JSON", self.url))?;
        anyhow::ensure!(
            status.is_success(),
            "the config provider at {} answered {status}: {}",
            self.url,
            body.get("error").unwrap_or(&body)
        );
        let config = body.get("config").cloned().unwrap_or_default();
        serde_json::from_value(config).context("the provider's config is not a valid service config")
    }
}

/// Where a replica's config changes come from.
#[derive(Debug)]
pub enum Source {
    Provider {
        provider: Provider,
        check_every: Duration,
    },
    File(PathBuf),
}

/// One `kaa run` replica's config follower.
#[derive(Debug)]
pub struct ConfigSync {
    pub instance: String,
    pub replica: String,
    pub bus: Bus,
    pub live: LiveConfigs,
    pub source: Source,
    /// The `--config` file's content the replica started from (for the file watch).
    pub started_with: Vec<u8>,
}

impl ConfigSync {
    /// Follows config changes until `stop`. Subscribes before it returns the task, so an
    /// announcement published once the process is healthy is not missed.
    pub async fn start(self, stop: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let announcements = match &self.source {
            Source::Provider { .. } => {
                let own = subject::scmp_service_configuration(&self.instance, "*");
                let broadcast = subject::scmp_broadcast_configuration(PROVIDER, "*");
                Some((
                    self.bus
                        .subscribe(&own, None)
                        .await
                        .context("cannot subscribe to 17/SCMP")?,
                    self.bus
                        .subscribe(&broadcast, None)
                        .await
                        .context("cannot subscribe to 17/SCMP")?,
                ))
            }
            Source::File(_) => None,
        };
        self.report().await;
        Ok(tokio::spawn(async move {
            match announcements {
                Some((own, broadcast)) => self.follow_provider(own, broadcast, stop).await,
                None => self.follow_file(stop).await,
            }
        }))
    }

    async fn follow_provider(
        &self,
        mut own: Subscription,
        mut broadcast: Subscription,
        stop: CancellationToken,
    ) {
        let Source::Provider {
            provider,
            check_every,
        } = &self.source
        else {
            return;
        };
        let mut check = interval(*check_every);
        let mut report = interval(REPORT_EVERY);
        loop {
            let why = tokio::select! {
                () = stop.cancelled() => return,
                Some(_) = own.next() => "announcement",
                Some(_) = broadcast.next() => "broadcast announcement",
                _ = check.tick() => "periodic check",
                _ = report.tick() => {
                    self.report().await;
                    continue;
                }
            };
            match provider.fetch().await {
                Ok(config) => self.offer(config, why).await,
                // Not the config's fault: keep running, try again at the next announcement or check.
                Err(e) => tracing::warn!(reason = why, "cannot fetch the config: {e:#}"),
            }
        }
    }

    async fn follow_file(&self, stop: CancellationToken) {
        let Source::File(path) = &self.source else {
            return;
        };
        let (tx, mut edits) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(crate::watch::file(
            path.clone(),
            self.started_with.clone(),
            FILE_POLL,
            stop.clone(),
            move |content| {
                let _ = tx.send(content);
            },
        ));
        let mut report = interval(REPORT_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(content) = edits.recv() => match parse(&content) {
                    Ok(config) => self.offer(config, "file edited").await,
                    Err(e) => {
                        let why = format!("{}: {e:#}", path.display());
                        tracing::warn!("config file edit REJECTED, the previous config keeps running: {why}");
                        self.live.reject(&self.instance, why);
                        self.report().await;
                    }
                },
                _ = report.tick() => self.report().await,
            }
        }
    }

    /// Applies `config` (logging the outcome) and reports it.
    async fn offer(&self, config: ServiceConfig, why: &str) {
        tracing::debug!(reason = why, version = config.version(), "config offered");
        let reports = self.live.apply(vec![config], false);
        crate::live::log(&reports);
        self.report().await;
    }

    /// Publishes what this replica runs.
    async fn report(&self) {
        let Some(status) = self.live.statuses().remove(&self.instance) else {
            return;
        };
        let event = ConfigAppliedEvent {
            correlation_id: uuid::Uuid::new_v4().to_string(),
            timestamp: kaa_protocol::now_millis(),
            service_instance_name: self.instance.clone(),
            originator_replica_id: self.replica.clone(),
            version: status.version,
            error: status.error,
            rejected_version: status.rejected_version,
        };
        let subject = subject::scmp_config_applied(&self.instance);
        if let Err(e) = self.bus.publish(&subject, Bytes::from(event.to_avro())).await {
            tracing::debug!(error = %e, "cannot report the config version");
        }
    }
}

/// An interval whose first tick is one period away (the start already fetched and reported).
fn interval(every: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// A config file's content (JSON or YAML), unknown fields refused.
pub fn parse(content: &[u8]) -> anyhow::Result<ServiceConfig> {
    let text = std::str::from_utf8(content).context("the config is not UTF-8 text")?;
    Ok(serde_saphyr::from_str(text)?)
}
