//! The transport-independent heart of KPC: 1/KP requests in, 4/ESP out, replies back to the
//! session that asked.
//!
//! A transport (MQTT today) opens a session, hands every PUBLISH to [`Gateway::handle_publish`]
//! and writes whatever arrives on the session's [`Outbound`] channel. The gateway:
//! 1. parses the topic and checks the application version and extension instance;
//! 2. identifies the endpoint token (16/ECAP, once per token per session) and announces the
//!    endpoint with a 9/ELCE `connected` event;
//! 3. publishes a 4/ESP `ClientData` whose replyTo is this replica's subject and remembers the
//!    request by correlation id;
//! 4. routes each `ExtensionData` back: by correlation id to the session that asked, else (a push)
//!    to every session acting for that endpoint. Nothing ever reaches another client.
//!
//! It also applies 16/ECAP revocations: a revoked endpoint token is forgotten by every session
//! (the next request with it is validated again, and refused), a session left acting for no
//! endpoint is ended, and every session of a revoked client credential is ended at once.
//!
//! Logs name token ids, endpoint ids and credential ids, never token values: a topic is logged
//! only up to its extension level.
//!
//! Only sessions that can receive pushes (MQTT connections) announce their endpoints with 9/ELCE
//! events: a one-request HTTP session is not a connection, and announcing it would flap the
//! endpoint's connectivity (and, on other replicas, end the device's MQTT sessions as roamed).
//!
//! This file holds the sessions and the request path (steps 1 and 3); `identify` resolves tokens
//! and announces endpoints (step 2); `replies` routes
//! ExtensionData back and expires unanswered requests (step 4); `revocation` applies 16/ECAP
//! revocations; `roaming` drops endpoints that reconnected through another replica; `drain`
//! winds the replica down for a graceful shutdown; `limits` counts connections, requests and
//! tokens against the configured limits.

mod drain;
mod identify;
mod limits;
mod replies;
mod request;
mod revocation;
mod roaming;

pub use request::{Answer, BasicCredentials, Caller};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use kaa_blueprint::config::{KpcConfig, Live};
use kaa_bus::Bus;
use kaa_bus::metrics::Metrics;
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::error::KpError;
use kaa_protocol::esp::ClientData;
use kaa_protocol::topic::RequestTopic;
use kaa_protocol::{now_millis, subject};
use rmqtt_codec::types::QoS;
use tokio_util::sync::CancellationToken;

pub use self::limits::{Limit, Slot};
use self::limits::{Limits, SessionLimits};
use crate::auth::{Authenticator, ClientIdentity};
use crate::metrics::{ExtensionMetrics, KpcMetrics, ReplyKind};
use crate::tokens::{Identified, TokenResolver};

/// Identifies one client connection within this replica.
pub type SessionId = u64;

/// How many messages may wait for a slow client before further ones are dropped.
const OUTBOUND_QUEUE: usize = 1024;

/// A message for the client of one session.
#[derive(Debug)]
pub struct Outbound {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
}

/// A session as its transport sees it.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: SessionId,
    /// What to send to the client.
    pub outbound: flume::Receiver<Outbound>,
    /// Cancelled when the server ends the session; [`Gateway::why_ended`] tells why.
    pub ended: CancellationToken,
}

/// Why the server ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its credential or its only endpoint token was revoked.
    Revoked,
    /// Every endpoint of the session reconnected through another replica.
    TakenOver,
}

/// Shared state of one KPC replica.
#[derive(Debug)]
pub struct Gateway {
    /// Read once per request or connection ([`Gateway::config`]); replaced by a live config change.
    config: Live<KpcConfig>,
    bus: Bus,
    tokens: TokenResolver,
    auth: Authenticator,
    replica_id: String,
    reply_subject: String,
    metrics: KpcMetrics,
    limits: Limits,
    next_id: AtomicU64,
    state: Mutex<State>,
    /// Credentials revoked lately: a CONNECT whose answer was in flight across the revocation
    /// must not open a session after the event was applied (see `revocation`).
    recently_revoked: Mutex<VecDeque<(Instant, String)>>,
    /// Set when the replica winds down: new requests are refused (see `drain`).
    draining: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionId, Session>,
    /// Requests waiting for their ExtensionData, by correlation id.
    pending: HashMap<String, Pending>,
    /// Which sessions act for an endpoint (pushes go to all of them).
    endpoints: HashMap<String, Vec<SessionId>>,
}

#[derive(Debug)]
struct Session {
    tx: flume::Sender<Outbound>,
    /// Endpoint tokens this session identified, and the reverse map used to address pushes.
    tokens: HashMap<String, Identified>,
    endpoint_tokens: HashMap<String, String>,
    /// When this replica announced each endpoint connected (9/ELCE timestamp, ms): a `connected`
    /// from another replica only takes the endpoint away if it is newer (see `roaming`).
    announced: HashMap<String, i64>,
    /// The authenticated client, if the listener authenticates.
    client: Option<ClientIdentity>,
    /// One token for every reason to end (an idle session waits on it), the reason beside it.
    ended: CancellationToken,
    end: Option<End>,
    /// Whether extension pushes reach this session: not for a one-request HTTP session, whose
    /// channel must carry nothing but its answer.
    pushes: bool,
    limits: SessionLimits,
}

impl Session {
    /// Ends the session from the server's side; the first reason given is the one reported.
    fn end(&mut self, why: End) {
        self.end.get_or_insert(why);
        self.ended.cancel();
    }
}

#[derive(Debug)]
struct Pending {
    session: SessionId,
    qos: QoS,
    /// The request topic (request id included): replies go to `{topic}/status` or `{topic}/error`.
    topic: String,
    /// Whether a success is delivered: the request has a request id, or (HTTP) always.
    has_request_id: bool,
    deadline: Instant,
    /// When the client's PUBLISH arrived, for the request duration histogram.
    started: Instant,
    extension: Arc<ExtensionMetrics>,
    /// Its place under `maxInFlightPerConnection`, freed when the entry goes.
    _in_flight: Slot,
}

impl Gateway {
    /// A gateway whose metrics are registered in `metrics` (one gateway per registry).
    pub fn new(config: KpcConfig, bus: Bus, replica_id: String, metrics: &Metrics) -> Arc<Self> {
        let metrics = KpcMetrics::register(metrics, &config);
        let reply_subject = subject::esp_extension_data_replica(&replica_id);
        let tokens = TokenResolver::new(
            bus.clone(),
            config.token_provider.clone(),
            Duration::from_millis(config.limits.token_timeout_ms),
            Duration::from_millis(config.limits.token_cache_ttl_ms),
        );
        let auth = Authenticator::new(
            bus.clone(),
            &config.token_provider,
            Duration::from_millis(config.limits.auth_timeout_ms),
            config.limits.failed_connects_per_minute,
        );
        Arc::new(Gateway {
            config: Live::new(config),
            bus,
            tokens,
            auth,
            replica_id,
            reply_subject,
            metrics,
            limits: Limits::default(),
            next_id: AtomicU64::new(1),
            state: Mutex::default(),
            recently_revoked: Mutex::default(),
            draining: AtomicBool::new(false),
        })
    }

    pub(crate) fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    pub(crate) fn metrics(&self) -> &KpcMetrics {
        &self.metrics
    }

    /// The current config: read it once per request and keep that snapshot.
    pub fn config(&self) -> Arc<KpcConfig> {
        self.config.get()
    }

    /// The handle that replaces the config while the gateway runs (listeners excepted: they
    /// are bound at start).
    pub fn live_config(&self) -> &Live<KpcConfig> {
        &self.config
    }

    /// The subject this replica receives ExtensionData on.
    pub fn reply_subject(&self) -> &str {
        &self.reply_subject
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way that matters
        // more than losing every session, so keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Why the server ended a session (asked once its `ended` token is cancelled).
    pub fn why_ended(&self, id: SessionId) -> Option<End> {
        self.state().sessions.get(&id).and_then(|s| s.end)
    }

    /// Registers a new client session. `None` if the client's credential was revoked while it
    /// was being authenticated.
    pub fn open_session(&self, client: Option<ClientIdentity>) -> Option<SessionHandle> {
        self.open(client, true)
    }

    fn open(&self, client: Option<ClientIdentity>, pushes: bool) -> Option<SessionHandle> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = flume::bounded(OUTBOUND_QUEUE);
        let ended = CancellationToken::new();
        let session = Session {
            tx,
            tokens: HashMap::new(),
            endpoint_tokens: HashMap::new(),
            announced: HashMap::new(),
            client,
            ended: ended.clone(),
            end: None,
            pushes,
            limits: SessionLimits::default(),
        };
        // Checked under the session lock that `revoke_credential` records under, so a revocation
        // either finds this session or is found here.
        let mut state = self.state();
        if let Some(c) = &session.client
            && self.was_revoked_lately(&c.credential_id)
        {
            return None;
        }
        state.sessions.insert(id, session);
        Some(SessionHandle {
            id,
            outbound: rx,
            ended,
        })
    }

    /// Forgets a session and announces its endpoints as disconnected (one 9/ELCE event), those
    /// that no other session of this replica acts for.
    pub async fn close_session(&self, id: SessionId) {
        let endpoints = {
            let mut state = self.state();
            let Some(session) = state.sessions.remove(&id) else {
                return;
            };
            for endpoint_id in session.announced.keys() {
                unlist(&mut state.endpoints, endpoint_id, id);
            }
            // Only what this session announced (an endpoint that roamed away is not ours to
            // declare disconnected), and only if no other session here still acts for it (a
            // device that reconnected before its old connection timed out is still connected).
            session
                .tokens
                .into_values()
                .filter(|i| {
                    session.announced.contains_key(&i.endpoint_id)
                        && !state.endpoints.contains_key(&i.endpoint_id)
                })
                .map(|i| (i.endpoint_id, i.app_version))
                .collect()
        };
        self.announce_disconnected(endpoints).await;
    }

    /// Handles one PUBLISH from a client. Errors are answered on `{topic}/error`.
    pub async fn handle_publish(&self, session: SessionId, topic: &str, payload: Bytes, qos: QoS) {
        if let Err((error, extension)) = self.submit(session, topic, payload, qos, false).await
            && can_answer(topic)
            && self.send(
                session,
                format!("{topic}/error"),
                Bytes::from(error.to_json()),
                qos,
            )
        {
            extension.replied(ReplyKind::Error);
        }
    }

    /// Forwards one request and counts the outcome; a refusal comes back with the counters it
    /// belongs to, for the transport to deliver. `always_answer`: deliver a success even without
    /// a request id (HTTP, where every request gets a response).
    async fn submit(
        &self,
        session: SessionId,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        always_answer: bool,
    ) -> Result<(), (KpError, Arc<ExtensionMetrics>)> {
        let started = Instant::now();
        let mut extension = None;
        let forwarded = self
            .forward(
                session,
                topic,
                payload,
                qos,
                started,
                always_answer,
                &mut extension,
            )
            .await;
        let extension = extension.unwrap_or_else(|| self.metrics.unrouted().clone());
        match forwarded {
            Ok(()) => {
                extension.forwarded();
                Ok(())
            }
            Err(error) => {
                extension.rejected(error.status_code);
                tracing::debug!(
                    session,
                    topic = loggable(topic),
                    code = error.status_code,
                    reason = %error.reason_phrase,
                    "refused"
                );
                Err((error, extension))
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // one request's parts, passed straight through
    async fn forward(
        &self,
        session: SessionId,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        started: Instant,
        always_answer: bool,
        // Set once the extension is known to be routed: whose counters the outcome goes to.
        extension: &mut Option<Arc<ExtensionMetrics>>,
    ) -> Result<(), KpError> {
        if self.is_draining() {
            return Err(KpError::new(
                503,
                "the gateway is shutting down; reconnect to carry on",
            ));
        }
        // One snapshot for the whole request: a config change applies to the next one.
        let config = self.config.get();
        let limits = &config.limits;
        let within_rate = self.take_publish_token(session, limits);
        let request = RequestTopic::parse(topic).map_err(|e| KpError::new(400, e.to_string()))?;
        let route = config.app_versions.get(request.app_version).ok_or_else(|| {
            KpError::new(
                404,
                format!("unknown application version `{}`", request.app_version),
            )
        })?;
        if !route.extensions.iter().any(|e| e == request.extension) {
            return Err(KpError::new(
                404,
                format!(
                    "application version `{}` has no extension `{}`",
                    request.app_version, request.extension
                ),
            ));
        }
        let metrics = self.metrics.extension(request.extension).clone();
        *extension = Some(metrics.clone());
        let (token, resource_path) = request
            .endpoint_resource()
            .map_err(|e| KpError::new(400, e.to_string()))?;
        let limit = limits.max_payload_bytes;
        if payload.len() > limit {
            self.count_refusal(Limit::Payload);
            return Err(KpError::new(
                413,
                format!(
                    "payload of {} bytes exceeds the limit of {limit} bytes",
                    payload.len()
                ),
            ));
        }
        if !within_rate {
            return Err(self.over_publish_rate(limits));
        }
        let in_flight = self.take_in_flight(session, limits)?;
        let endpoint = self
            .identify(session, &route.application, request.app_version, token)
            .await?;
        let endpoint_id = endpoint.endpoint_id.clone();

        let correlation_id = format!(
            "{}-{}",
            self.replica_id,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let data = ClientData {
            correlation_id: correlation_id.clone(),
            timestamp: now_millis(),
            timeout: limits.request_timeout_ms as i64,
            app_version_name: request.app_version.to_owned(),
            endpoint_id: Some(endpoint_id),
            resource_path: resource_path.to_owned(),
            request_id: request.request_id,
            payload: payload.to_vec(),
            config_name: None,
        };
        let pending = Pending {
            session,
            qos,
            topic: topic.to_owned(),
            has_request_id: request.request_id.is_some() || always_answer,
            deadline: Instant::now() + Duration::from_millis(limits.request_timeout_ms),
            started,
            extension: metrics,
            _in_flight: in_flight,
        };
        self.state().pending.insert(correlation_id.clone(), pending);
        let subject = subject::esp_client_data(request.extension);
        if let Err(e) = self
            .bus
            .publish_with_reply(&subject, &self.reply_subject, Bytes::from(data.to_avro()))
            .await
        {
            self.state().pending.remove(&correlation_id);
            tracing::warn!(error = %e, subject, "could not forward to the extension");
            return Err(KpError::new(
                503,
                format!("extension `{}` is unreachable", request.extension),
            ));
        }
        Ok(())
    }

    /// Queues a message for a session's client; whether it was queued.
    fn send(&self, session: SessionId, topic: String, payload: Bytes, qos: QoS) -> bool {
        let tx = match self.state().sessions.get(&session) {
            Some(s) => s.tx.clone(),
            None => return false, // the client went away; nothing to deliver to
        };
        let sent = tx.try_send(Outbound {
            topic: topic.into(),
            payload,
            qos,
        });
        match sent {
            Ok(()) => true,
            Err(flume::TrySendError::Full(_)) => {
                self.metrics.dropped();
                tracing::warn!(session, "client is not reading; dropped a message for it");
                false
            }
            // The session is ending: nobody to deliver to, nothing dropped on a live client.
            Err(flume::TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Removes `session` from the sessions acting for `endpoint_id`.
fn unlist(endpoints: &mut HashMap<String, Vec<SessionId>>, endpoint_id: &str, session: SessionId) {
    if let Some(sessions) = endpoints.get_mut(endpoint_id) {
        sessions.retain(|s| *s != session);
        if sessions.is_empty() {
            endpoints.remove(endpoint_id);
        }
    }
}

/// A topic as far as it may be logged: up to the extension level, never the endpoint token.
fn loggable(topic: &str) -> &str {
    match topic.match_indices('/').nth(2) {
        Some((end, _)) => &topic[..end],
        None => topic,
    }
}

/// Whether `{topic}/error` is a topic a client can receive: the request topic may be malformed
/// for 1/KP yet still a fine MQTT topic name, and then the client deserves to hear why.
fn can_answer(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= kaa_protocol::topic::MAX_TOPIC_LEN
        && !topic.contains(['+', '#', '\0'])
}
