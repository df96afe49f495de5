//! One background task per NATS URL: connects (retrying forever), publishes the announcements
//! owed, and collects the replicas' `ConfigAppliedEvent` reports. A reconcile only records what
//! is owed and wakes the task: it never waits for NATS.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use async_nats::{Client, connection::State};
use bytes::Bytes;
use futures_util::StreamExt;
use kaa_protocol::{
    avro::AvroRecord,
    scmp::{
        BroadcastConfigurationUpdateEvent, ConfigAppliedEvent, DEFAULT_TENANT, DELETE, PROVIDER,
        ServiceSpecificConfigurationUpdateEvent, UPSERT,
    },
    subject,
};
use tokio::sync::Notify;

use super::{Changes, Inner, Provider, lock};

/// Between attempts to reach a server never reached yet.
const CONNECT_RETRY: Duration = Duration::from_secs(1);
/// How often reports are checked for replicas gone silent, even without news.
const RECHECK: Duration = Duration::from_secs(5);
/// A replica not heard from for this long is forgotten (they report every 30 s).
pub const REPORT_EXPIRY: Duration = Duration::from_secs(90);
/// The longest an announcement waits for the server's acknowledgement of the flush.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(super) struct Links {
    links: Mutex<HashMap<String, Arc<Link>>>,
}

impl Links {
    /// The link to `url`, started (its task spawned) the first time.
    pub(super) fn get_or_start(&self, url: &str, replica_id: &str, provider: Weak<Inner>) -> Arc<Link> {
        let mut links = lock(&self.links);
        if let Some(link) = links.get(url) {
            return link.clone();
        }
        let link = Arc::new(Link {
            url: url.to_owned(),
            client: Mutex::default(),
            owed: Mutex::default(),
            wake: Notify::new(),
            reports: Mutex::default(),
        });
        links.insert(url.to_owned(), link.clone());
        tokio::spawn(run(link.clone(), replica_id.to_owned(), provider));
        link
    }
}

/// Announcements not yet published: per instance the latest update type, and the broadcast.
#[derive(Default)]
struct Owed {
    instances: BTreeMap<String, &'static str>,
    broadcast: bool,
}

pub(super) struct Link {
    url: String,
    client: Mutex<Option<Client>>,
    owed: Mutex<Owed>,
    wake: Notify,
    /// The latest report per (instance, replica), and when it came.
    reports: Mutex<HashMap<(String, String), (ConfigAppliedEvent, Instant)>>,
}

impl Link {
    pub(super) fn connected(&self) -> bool {
        lock(&self.client)
            .as_ref()
            .is_some_and(|c| c.connection_state() == State::Connected)
    }

    /// Records `changes` as owed (a later change of an instance replaces an earlier one).
    pub(super) fn owe(&self, changes: &Changes) {
        if changes.is_empty() {
            return;
        }
        let mut owed = lock(&self.owed);
        for name in &changes.upserted {
            owed.instances.insert(name.clone(), UPSERT);
        }
        for name in &changes.deleted {
            owed.instances.insert(name.clone(), DELETE);
        }
        owed.broadcast = true;
        drop(owed);
        self.wake.notify_one();
    }

    /// The reports of replicas heard from within [`REPORT_EXPIRY`].
    pub(super) fn reports(&self) -> Vec<ConfigAppliedEvent> {
        let mut reports = lock(&self.reports);
        reports.retain(|_, (_, at)| at.elapsed() < REPORT_EXPIRY);
        reports.values().map(|(r, _)| r.clone()).collect()
    }

    fn report(&self, report: ConfigAppliedEvent) {
        let key = (
            report.service_instance_name.clone(),
            report.originator_replica_id.clone(),
        );
        lock(&self.reports).insert(key, (report, Instant::now()));
    }

    /// Publishes what is owed; on failure it stays owed.
    async fn announce(&self, client: &Client, replica_id: &str) {
        let owed = std::mem::take(&mut *lock(&self.owed));
        if !owed.broadcast && owed.instances.is_empty() {
            return;
        }
        let published = async {
            for (instance, update_type) in &owed.instances {
                let event = ServiceSpecificConfigurationUpdateEvent {
                    correlation_id: uuid::Uuid::new_v4().to_string(),
                    timestamp: now_millis(),
                    tenant_id: DEFAULT_TENANT.to_owned(),
                    app_name: None,
                    app_ver_name: None,
                };
                let subject = subject::scmp_service_configuration(instance, update_type);
                client
                    .publish(subject, Bytes::from(event.to_avro()))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let broadcast = BroadcastConfigurationUpdateEvent {
                correlation_id: uuid::Uuid::new_v4().to_string(),
                timestamp: now_millis(),
                originator_replica_id: replica_id.to_owned(),
                tenant_id: Some(DEFAULT_TENANT.to_owned()),
                app_name: None,
                app_ver_name: None,
            };
            let subject = subject::scmp_broadcast_configuration(PROVIDER, UPSERT);
            client
                .publish(subject, Bytes::from(broadcast.to_avro()))
                .await
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await {
                Ok(flushed) => flushed.map_err(|e| e.to_string()),
                Err(_) => Err("no flush acknowledgement".to_owned()),
            }
        }
        .await;
        match published {
            Ok(()) => {
                tracing::debug!(nats = %self.url, instances = ?owed.instances, "announced config changes");
            }
            Err(error) => {
                tracing::warn!(nats = %self.url, %error, "announcing config changes failed; retrying");
                let mut now_owed = lock(&self.owed);
                for (instance, update_type) in owed.instances {
                    // A newer change of the same instance, recorded meanwhile, wins.
                    now_owed.instances.entry(instance).or_insert(update_type);
                }
                now_owed.broadcast = true;
            }
        }
    }
}

fn now_millis() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The link's life: connect, follow reports, announce what is owed whenever woken (a feed, a
/// reconnect) or every [`RECHECK`]; ends when the provider is dropped.
async fn run(link: Arc<Link>, replica_id: String, provider: Weak<Inner>) {
    let Some(client) = connect(&link, &provider).await else {
        return;
    };
    *lock(&link.client) = Some(client.clone());
    match client.subscribe(subject::scmp_config_applied_any()).await {
        Ok(mut reports) => {
            let (link, provider) = (Arc::downgrade(&link), provider.clone());
            tokio::spawn(async move {
                while let Some(message) = reports.next().await {
                    let (Some(link), Some(inner)) = (link.upgrade(), provider.upgrade()) else {
                        return;
                    };
                    match ConfigAppliedEvent::from_avro(&message.payload) {
                        Ok(report) => {
                            link.report(report);
                            Provider { inner }.refresh(&link.url);
                        }
                        Err(error) => tracing::debug!(%error, "ignoring a malformed config report"),
                    }
                }
            });
        }
        Err(error) => tracing::warn!(nats = %link.url, %error, "cannot follow config reports"),
    }
    link.wake.notify_one();
    loop {
        tokio::select! {
            () = link.wake.notified() => {}
            () = tokio::time::sleep(RECHECK) => {}
        }
        let Some(inner) = provider.upgrade() else { return };
        if client.connection_state() == State::Connected {
            link.announce(&client, &replica_id).await;
        }
        // Connection state and expired reports show in the rollout.
        Provider { inner }.refresh(&link.url);
    }
}

/// Connects, retrying until it works or the provider is gone. Once connected, async-nats
/// reconnects by itself; its events wake the link.
async fn connect(link: &Arc<Link>, provider: &Weak<Inner>) -> Option<Client> {
    let mut failures = 0u32;
    loop {
        let woken = Arc::downgrade(link);
        let options = async_nats::ConnectOptions::new()
            .name("kaa-operator")
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(250)
                    .saturating_mul(u32::try_from(attempts).unwrap_or(u32::MAX))
                    .min(Duration::from_secs(2))
            })
            .event_callback(move |event| {
                let woken = woken.clone();
                async move {
                    tracing::info!(%event, "nats connection");
                    if let Some(link) = woken.upgrade() {
                        link.wake.notify_one();
                    }
                }
            });
        match options.connect(&link.url).await {
            Ok(client) => {
                tracing::info!(nats = %link.url, "config announcements connected");
                return Some(client);
            }
            Err(error) => {
                if failures == 0 {
                    tracing::warn!(nats = %link.url, %error, "NATS unreachable: config changes are announced when it is back");
                }
                failures = failures.saturating_add(1);
            }
        }
        tokio::time::sleep(CONNECT_RETRY).await;
        let inner = provider.upgrade()?;
        // Unreachable is news for the status the first time.
        if failures == 1 {
            Provider { inner }.refresh(&link.url);
        }
    }
}
