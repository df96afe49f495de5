//! [`Device5`]: an MQTT 5 client (rumqttc) that never subscribes, collects whatever the gateway
//! sends it, and reports the reason code of a server DISCONNECT.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{DEADLINE, reply};

/// How an MQTT 5 connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The server sent DISCONNECT with this reason.
    Disconnect(DisconnectReasonCode),
    /// The connection ended without a DISCONNECT: the client's error text.
    Closed(String),
}

#[derive(Debug)]
pub struct Device5 {
    pub client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<(String, Bytes)>,
    ended: mpsc::UnboundedReceiver<Ended>,
}

impl Device5 {
    /// Connects to 127.0.0.1:`port` without credentials; panics unless the gateway accepts
    /// within [`DEADLINE`].
    pub async fn connect(port: u16, client_id: &str) -> Device5 {
        Self::try_connect(port, client_id)
            .await
            .unwrap_or_else(|e| panic!("`{client_id}` could not connect: {e}"))
    }

    /// Connects: the device, or the error its CONNACK (or the connection) ended in.
    pub async fn try_connect(port: u16, client_id: &str) -> Result<Device5, ConnectionError> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let first = match tokio::time::timeout(DEADLINE, eventloop.poll()).await {
            Ok(first) => first?,
            Err(_) => panic!("no CONNACK for `{client_id}` within {DEADLINE:?}"),
        };
        assert!(
            matches!(first, Event::Incoming(Packet::ConnAck(_))),
            "expected a CONNACK first, got {first:?}"
        );
        let (tx, incoming) = mpsc::unbounded_channel();
        let (etx, ended) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let _ = tx.send((topic, p.payload.clone()));
                    }
                    Ok(_) => {}
                    // rumqttc reports a server's DISCONNECT as an error carrying its reason code.
                    Err(ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. })) => {
                        let _ = etx.send(Ended::Disconnect(reason_code));
                        return;
                    }
                    Err(e) => {
                        let _ = etx.send(Ended::Closed(e.to_string()));
                        return;
                    }
                }
            }
        });
        Ok(Device5 {
            client,
            incoming,
            ended,
        })
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

    /// Publishes a request (QoS 1) and returns the first message on `{topic}/status` or
    /// `{topic}/error`: the suffix and the JSON body.
    pub async fn request(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> (String, Value) {
        self.publish(topic, payload, QoS::AtLeastOnce).await;
        let message = self.next_message(DEADLINE).await;
        reply(topic, message)
    }

    /// How the connection ended, or None if it is still open after `wait`.
    pub async fn ended(&mut self, wait: Duration) -> Option<Ended> {
        tokio::time::timeout(wait, self.ended.recv()).await.ok().flatten()
    }
}
