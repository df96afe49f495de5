//! Which endpoints are online, and through which gateway replica: what an extension needs to push
//! to a device (CMX configurations, CEX commands) without being asked.
//!
//! A [`Presence`] follows the 9/ELCE `connected` / `disconnected` events of the configured gateway
//! instances on every replica of the extension (no queue group: each replica must know), and
//! keeps endpointId -> (push subject, application version):
//! - `connected` from replica R: the endpoint is online at R (the latest `connected` wins, as a
//!   roaming endpoint is dropped by its former replica without a `disconnected`);
//! - `disconnected` from R: the endpoint goes offline only if R still holds it, so a late
//!   `disconnected` from the former replica does not hide an endpoint that moved;
//! - `appversion-updated` (from any register): an online endpoint now uses the new version, and
//!   is offered what that version has for it (CMX: its configuration).
//!
//! [`Presence::push`] sends a 4/ESP `ExtensionData` (no request id) to the holding replica's
//! subject, which delivers it on `.../status` to every MQTT session of the endpoint.
//!
//! Limitation: an extension replica started after a device connected has seen no `connected`
//! for it. It learns the endpoint from the device's next request to this extension
//! ([`Presence::seen`]: the `replyTo` of a `ClientData` is the gateway replica's subject), or from
//! the device's next connection. Until then it pushes nothing to that device; nothing is lost:
//! pending commands and configurations are sent on the next connect (or pulled).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use futures_util::stream::{SelectAll, select_all};
use kaa_bus::{Bus, BusError, Message, Subscription};
use kaa_protocol::{
    avro::AvroRecord,
    elce::{AppVersionUpdatedEvent, ConnectedEvent, DisconnectedEvent},
    esp::ExtensionData,
    now_millis, subject,
};
use tokio_util::sync::CancellationToken;

use crate::worker;

/// Where an online endpoint can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Online {
    /// The gateway replica's ExtensionData subject.
    pub push_subject: String,
    pub app_version: String,
}

/// An endpoint that just came online (from a 9/ELCE `connected` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub endpoint_id: String,
    pub app_version: String,
}

/// The online endpoints as this replica knows them; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Presence {
    bus: Bus,
    /// The extension instance pushes come from (topic level 3 on the device's side).
    extension: Arc<str>,
    online: Arc<Mutex<HashMap<String, Online>>>,
}

impl Presence {
    pub fn new(bus: Bus, extension: &str) -> Self {
        Presence {
            bus,
            extension: Arc::from(extension),
            online: Arc::default(),
        }
    }

    /// The extension instance these endpoints are tracked for.
    pub fn instance(&self) -> &str {
        &self.extension
    }

    fn online(&self) -> MutexGuard<'_, HashMap<String, Online>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still usable.
        self.online.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes (no queue group) to the connectivity events of `kpc_instances`; feed what
    /// arrives to [`Self::apply`]. Subscribed when this returns.
    pub async fn subscribe(
        &self,
        kpc_instances: &[String],
    ) -> Result<SelectAll<Subscription>, (String, BusError)> {
        let mut subs = Vec::with_capacity(kpc_instances.len() * 2 + 1);
        // Endpoints moved to another application version, by whichever register moved them.
        let moves = subject::elce_app_version_updated("*");
        subs.push(self.bus.subscribe(&moves, None).await.map_err(|e| (moves, e))?);
        for kpc in kpc_instances {
            for subject in [subject::elce_connected(kpc), subject::elce_disconnected(kpc)] {
                let sub = self
                    .bus
                    .subscribe(&subject, None)
                    .await
                    .map_err(|e| (subject, e))?;
                subs.push(sub);
            }
        }
        Ok(select_all(subs))
    }

    /// Applies one connectivity event or app-version move; returns the endpoints it brought
    /// online, or moved while online (both are offered what they should have).
    pub fn apply(&self, msg: &Message) -> Vec<Connected> {
        if msg.subject.ends_with(".appversion-updated") {
            match AppVersionUpdatedEvent::from_avro(&msg.payload) {
                Ok(event) => return self.moved(&event).into_iter().collect(),
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "dropping a malformed AppVersionUpdatedEvent")
                }
            }
        } else if msg.subject.ends_with(".connected") {
            match ConnectedEvent::from_avro(&msg.payload) {
                Ok(event) => return self.connected(&event),
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "dropping a malformed ConnectedEvent")
                }
            }
        } else {
            match DisconnectedEvent::from_avro(&msg.payload) {
                Ok(event) => self.disconnected(&event),
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "dropping a malformed DisconnectedEvent")
                }
            }
        }
        Vec::new()
    }

    /// The endpoints of `event` are online at its originator replica.
    pub fn connected(&self, event: &ConnectedEvent) -> Vec<Connected> {
        let push_subject = subject::esp_extension_data_replica(&event.originator_replica_id);
        let mut online = self.online();
        event
            .endpoints
            .iter()
            .map(|(endpoint_id, app_version)| {
                online.insert(
                    endpoint_id.clone(),
                    Online {
                        push_subject: push_subject.clone(),
                        app_version: app_version.clone(),
                    },
                );
                Connected {
                    endpoint_id: endpoint_id.clone(),
                    app_version: app_version.clone(),
                }
            })
            .collect()
    }

    /// The endpoint of `event` uses another application version from now on: pushes go to
    /// topics of that version. `Some` if it is online here.
    pub fn moved(&self, event: &AppVersionUpdatedEvent) -> Option<Connected> {
        let mut online = self.online();
        let entry = online.get_mut(&event.endpoint_id)?;
        entry.app_version.clone_from(&event.app_version_name);
        Some(Connected {
            endpoint_id: event.endpoint_id.clone(),
            app_version: event.app_version_name.clone(),
        })
    }

    /// The endpoints of `event` go offline, unless another replica holds them by now.
    pub fn disconnected(&self, event: &DisconnectedEvent) {
        let push_subject = subject::esp_extension_data_replica(&event.originator_replica_id);
        let mut online = self.online();
        for endpoint_id in event.endpoints.keys() {
            if online
                .get(endpoint_id)
                .is_some_and(|o| o.push_subject == push_subject)
            {
                online.remove(endpoint_id);
            }
        }
    }

    /// A device request reached this extension through the gateway replica at `reply_to`: an
    /// endpoint this replica did not know yet is online there (see the module's limitation).
    pub fn seen(&self, endpoint_id: &str, app_version: &str, reply_to: Option<&str>) {
        let Some(reply_to) = reply_to else { return };
        self.online()
            .entry(endpoint_id.to_owned())
            .or_insert_with(|| Online {
                push_subject: reply_to.to_owned(),
                app_version: app_version.to_owned(),
            });
    }

    /// The online endpoints of an application version.
    pub fn endpoints_of(&self, app_version: &str) -> Vec<String> {
        self.online()
            .iter()
            .filter(|(_, o)| o.app_version == app_version)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Where the endpoint is online, if it is.
    pub fn get(&self, endpoint_id: &str) -> Option<Online> {
        self.online().get(endpoint_id).cloned()
    }

    /// Pushes `payload` on the endpoint's `resource_path` (e.g. `/config/json`); whether the
    /// endpoint was online (then the push was handed to the bus).
    pub async fn push(
        &self,
        endpoint_id: &str,
        resource_path: &str,
        payload: Vec<u8>,
    ) -> Result<bool, BusError> {
        let Some(online) = self.get(endpoint_id) else {
            return Ok(false);
        };
        let data = ExtensionData {
            correlation_id: uuid::Uuid::new_v4().to_string(),
            timestamp: now_millis(),
            timeout: 0,
            app_version_name: Some(online.app_version),
            extension_instance_name: Some(self.extension.to_string()),
            endpoint_id: Some(endpoint_id.to_owned()),
            resource_path: resource_path.to_owned(),
            request_id: None,
            payload: Some(payload),
            status_code: 200,
            reason_phrase: None,
        };
        self.bus
            .publish(&online.push_subject, Bytes::from(data.to_avro()))
            .await?;
        Ok(true)
    }
}

/// Runs an extension that pushes to devices (CMX, CEX) until `shutdown`: its 4/ESP ClientData,
/// each answered by `on_request` (with the replica subject the request came from), and the
/// connectivity events, each endpoint that comes online handed to `on_connect`. Returns early
/// only if a subscription cannot be made.
#[allow(clippy::too_many_arguments)] // one extension's wiring, passed straight through
pub(crate) async fn serve_extension<R, RFut, C, CFut>(
    kind: &str,
    instance: &str,
    presence: &Presence,
    kpc_instances: &[String],
    max_in_flight: usize,
    shutdown: &CancellationToken,
    on_request: R,
    on_connect: C,
) -> Result<(), crate::ServeError>
where
    R: Fn(Option<String>, kaa_protocol::esp::ClientData) -> RFut,
    RFut: Future<Output = ExtensionData> + Send + 'static,
    C: Fn(Connected) -> CFut,
    CFut: Future<Output = ()> + Send + 'static,
{
    let subscribe_error = |(subject, source)| crate::ServeError::Subscribe { subject, source };
    let requests = worker::subscribe(
        &presence.bus,
        subject::esp_client_data(instance),
        instance,
        |s, e| subscribe_error((s, e)),
    )
    .await?;
    let events = presence.subscribe(kpc_instances).await.map_err(subscribe_error)?;
    tracing::info!(%instance, gateways = ?kpc_instances, "{kind} ready");
    let (requests_name, events_name) = (format!("{kind}.esp.ClientData"), format!("{kind}.elce"));
    let devices = crate::extension::serve_client_data(
        &requests_name,
        &presence.bus,
        requests,
        max_in_flight,
        shutdown,
        |msg, data| on_request(msg.reply_to, data),
    );
    let connects = follow(
        &events_name,
        presence,
        events,
        max_in_flight,
        shutdown,
        on_connect,
    );
    tokio::join!(devices, connects);
    Ok(())
}

/// Applies every connectivity event of `events` (in order, in this loop) and runs `on_connect`
/// for each endpoint that came online (concurrently, at most `max_in_flight`), until `shutdown`.
pub(crate) async fn follow<H, Fut>(
    name: &str,
    presence: &Presence,
    events: SelectAll<Subscription>,
    max_in_flight: usize,
    shutdown: &CancellationToken,
    on_connect: H,
) where
    H: Fn(Connected) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    worker::run(name, events, max_in_flight, shutdown, |msg: Message| {
        let work: Vec<Fut> = presence.apply(&msg).into_iter().map(&on_connect).collect();
        async move {
            for w in work {
                w.await;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn connected(replica: &str, endpoint: &str) -> ConnectedEvent {
        ConnectedEvent {
            endpoints: BTreeMap::from([(endpoint.to_owned(), "v1".to_owned())]),
            originator_replica_id: replica.to_owned(),
            ..Default::default()
        }
    }

    fn disconnected(replica: &str, endpoint: &str) -> DisconnectedEvent {
        DisconnectedEvent {
            endpoints: BTreeMap::from([(endpoint.to_owned(), "v1".to_owned())]),
            originator_replica_id: replica.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn the_latest_connected_wins_and_only_its_replica_disconnects() {
        let p = Presence::new(Bus::in_process(), "cex");
        let new = p.connected(&connected("kpc-0", "e1"));
        assert_eq!(new[0].endpoint_id, "e1");
        p.connected(&connected("kpc-1", "e1"));
        p.disconnected(&disconnected("kpc-0", "e1"));
        let at = p.get("e1").unwrap();
        assert_eq!(at.push_subject, "kaa.v1.replica.kpc-1.esp.ExtensionData");
        p.disconnected(&disconnected("kpc-1", "e1"));
        assert_eq!(p.get("e1"), None);
    }

    #[test]
    fn a_request_marks_an_unknown_endpoint_online_but_never_moves_a_known_one() {
        let p = Presence::new(Bus::in_process(), "cex");
        p.seen("e1", "v1", None);
        assert_eq!(p.get("e1"), None, "no replyTo: nowhere to push");
        p.seen("e1", "v1", Some("kaa.v1.replica.kpc-3.esp.ExtensionData"));
        assert_eq!(
            p.get("e1").unwrap().push_subject,
            "kaa.v1.replica.kpc-3.esp.ExtensionData"
        );
        p.connected(&connected("kpc-0", "e1"));
        p.seen("e1", "v1", Some("kaa.v1.replica.kpc-3.esp.ExtensionData"));
        assert_eq!(
            p.get("e1").unwrap().push_subject,
            "kaa.v1.replica.kpc-0.esp.ExtensionData"
        );
    }

    #[tokio::test]
    async fn pushes_go_to_the_holding_replica_without_request_id() {
        let bus = Bus::in_process();
        let p = Presence::new(bus.clone(), "cex");
        assert!(!p.push("e1", "/command/reboot", b"[]".to_vec()).await.unwrap());
        let mut sub = bus
            .subscribe("kaa.v1.replica.kpc-0.esp.ExtensionData", None)
            .await
            .unwrap();
        p.connected(&connected("kpc-0", "e1"));
        assert!(p.push("e1", "/command/reboot", b"[]".to_vec()).await.unwrap());
        let data = ExtensionData::from_avro(&sub.next().await.unwrap().payload).unwrap();
        assert_eq!(data.request_id, None);
        assert_eq!(data.extension_instance_name.as_deref(), Some("cex"));
        assert_eq!(data.app_version_name.as_deref(), Some("v1"));
        assert_eq!(
            (data.resource_path.as_str(), data.status_code),
            ("/command/reboot", 200)
        );
    }
}
