//! MQTT 3.1.1 and 5 behind one small interface, so the session loop is written once.
//! Decoding and encoding are rmqtt-codec's; this file only maps packets both ways.

use std::num::NonZeroU16;

use bytes::Bytes;
use bytestring::ByteString;
use rmqtt_codec::types::{Publish, QoS};
use rmqtt_codec::version::ProtocolVersion;
use rmqtt_codec::{MqttCodec, MqttPacket, v3, v5};

/// What a client sent after CONNECT, version-independent.
#[derive(Debug)]
pub(crate) enum Incoming {
    Publish(Box<Publish>),
    PubAck,
    PubRec(NonZeroU16),
    PubRel(NonZeroU16),
    PubComp,
    Subscribe {
        packet_id: NonZeroU16,
        qos: Vec<QoS>,
    },
    Unsubscribe {
        packet_id: NonZeroU16,
        count: usize,
    },
    PingReq,
    Disconnect,
    /// A packet a client must not send to a server (CONNECT twice, CONNACK, ...).
    Unexpected(&'static str),
}

/// The CONNECT fields the gateway uses. `Debug` shows whether a password came, never which.
pub(crate) struct Connect {
    pub client_id: ByteString,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("client_id", &self.client_id)
            .field("clean_session", &self.clean_session)
            .field("keep_alive", &self.keep_alive)
            .field("username", &self.username.is_some())
            .field("password", &self.password.is_some())
            .finish()
    }
}

/// Why a CONNECT is refused; mapped to each version's CONNACK return/reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ClientIdRejected,
    /// Wrong password or unknown user: v3 4, v5 0x86.
    BadCredentials,
    /// No acceptable credential (e.g. an unregistered certificate): v3 5, v5 0x87.
    NotAuthorized,
    /// The credential provider did not answer in time: v3 3, v5 0x88.
    ServerUnavailable,
    /// Too many failed CONNECTs from this address: v3 5, v5 0x9F.
    RateLimited,
    /// `maxConnections` sessions are open: v3 3, v5 0x97 quota exceeded. Not 0x89 "server
    /// busy", which reads as a passing overload: this is a configured limit, and the operator
    /// reading a client's log should see that.
    TooManyConnections,
}

/// Builds the packets a server sends, for the protocol version a client chose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wire(pub ProtocolVersion);

impl Wire {
    pub(crate) fn codec(self, max_packet_bytes: u32) -> MqttCodec {
        match self.0 {
            ProtocolVersion::MQTT3 => MqttCodec::V3(v3::Codec::new(max_packet_bytes)),
            ProtocolVersion::MQTT5 => MqttCodec::V5(v5::Codec::new(max_packet_bytes, 0)),
        }
    }

    pub(crate) fn connect(packet: MqttPacket) -> Option<Connect> {
        match packet {
            MqttPacket::V3(v3::Packet::Connect(c)) => Some(Connect {
                client_id: c.client_id,
                clean_session: c.clean_session,
                keep_alive: c.keep_alive,
                username: c.username,
                password: c.password,
            }),
            MqttPacket::V5(v5::Packet::Connect(c)) => Some(Connect {
                client_id: c.client_id,
                clean_session: c.clean_start,
                keep_alive: c.keep_alive,
                username: c.username,
                password: c.password,
            }),
            _ => None,
        }
    }

    pub(crate) fn incoming(packet: MqttPacket) -> Incoming {
        use Incoming as I;
        match packet {
            MqttPacket::V3(p) => match p {
                v3::Packet::Publish(p) => I::Publish(p),
                v3::Packet::PublishAck { .. } => I::PubAck,
                v3::Packet::PublishReceived { packet_id } => I::PubRec(packet_id),
                v3::Packet::PublishRelease { packet_id } => I::PubRel(packet_id),
                v3::Packet::PublishComplete { .. } => I::PubComp,
                v3::Packet::Subscribe {
                    packet_id,
                    topic_filters,
                } => I::Subscribe {
                    packet_id,
                    qos: topic_filters.into_iter().map(|(_, q)| q).collect(),
                },
                v3::Packet::Unsubscribe {
                    packet_id,
                    topic_filters,
                } => I::Unsubscribe {
                    packet_id,
                    count: topic_filters.len(),
                },
                v3::Packet::PingRequest => I::PingReq,
                v3::Packet::Disconnect => I::Disconnect,
                other => I::Unexpected(packet_name(other.packet_type())),
            },
            MqttPacket::V5(p) => match p {
                v5::Packet::Publish(p) => I::Publish(p),
                v5::Packet::PublishAck(_) => I::PubAck,
                v5::Packet::PublishReceived(ack) => I::PubRec(ack.packet_id),
                v5::Packet::PublishRelease(ack) => I::PubRel(ack.packet_id),
                v5::Packet::PublishComplete(_) => I::PubComp,
                v5::Packet::Subscribe(s) => I::Subscribe {
                    packet_id: s.packet_id,
                    qos: s.topic_filters.into_iter().map(|(_, o)| o.qos).collect(),
                },
                v5::Packet::Unsubscribe(u) => I::Unsubscribe {
                    packet_id: u.packet_id,
                    count: u.topic_filters.len(),
                },
                v5::Packet::PingRequest => I::PingReq,
                v5::Packet::Disconnect(_) => I::Disconnect,
                other => I::Unexpected(packet_name(other.packet_type())),
            },
            MqttPacket::Version(_) => I::Unexpected("CONNECT"),
        }
    }

    /// CONNACK accepting the client; `assigned_id` is set when the client sent an empty id, and
    /// `server_keepalive` when the server overrides the client's keepalive (both MQTT 5 only).
    pub(crate) fn connack(
        self,
        assigned_id: Option<ByteString>,
        max_packet_bytes: u32,
        server_keepalive: Option<u16>,
    ) -> MqttPacket {
        match self.0 {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::ConnectAck(v3::ConnectAck {
                return_code: v3::ConnectAckReason::ConnectionAccepted,
                session_present: false,
            })),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                assigned_client_id: assigned_id,
                max_packet_size: Some(max_packet_bytes),
                server_keepalive_sec: server_keepalive,
                // KPC is not a broker: no retained messages, no fan-out between devices.
                retain_available: false,
                wildcard_subscription_available: false,
                shared_subscription_available: false,
                subscription_identifiers_available: false,
                ..Default::default()
            }))),
        }
    }

    pub(crate) fn refuse(self, why: Refusal) -> MqttPacket {
        match self.0 {
            ProtocolVersion::MQTT3 => {
                let return_code = match why {
                    Refusal::ClientIdRejected => v3::ConnectAckReason::IdentifierRejected,
                    Refusal::BadCredentials => v3::ConnectAckReason::BadUserNameOrPassword,
                    // MQTT 3.1.1 has no "slow down": "not authorized" is the closest truth.
                    Refusal::NotAuthorized | Refusal::RateLimited => v3::ConnectAckReason::NotAuthorized,
                    Refusal::ServerUnavailable | Refusal::TooManyConnections => {
                        v3::ConnectAckReason::ServiceUnavailable
                    }
                };
                MqttPacket::V3(v3::Packet::ConnectAck(v3::ConnectAck {
                    return_code,
                    session_present: false,
                }))
            }
            ProtocolVersion::MQTT5 => {
                let reason_code = match why {
                    Refusal::ClientIdRejected => v5::ConnectAckReason::ClientIdentifierNotValid,
                    Refusal::BadCredentials => v5::ConnectAckReason::BadUserNameOrPassword,
                    Refusal::NotAuthorized => v5::ConnectAckReason::NotAuthorized,
                    Refusal::ServerUnavailable => v5::ConnectAckReason::ServerUnavailable,
                    Refusal::RateLimited => v5::ConnectAckReason::ConnectionRateExceeded,
                    Refusal::TooManyConnections => v5::ConnectAckReason::QuotaExceeded,
                };
                MqttPacket::V5(v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                    reason_code,
                    ..Default::default()
                })))
            }
        }
    }

    pub(crate) fn publish(
        self,
        topic: ByteString,
        payload: Bytes,
        qos: QoS,
        packet_id: Option<NonZeroU16>,
    ) -> MqttPacket {
        let publish = Publish {
            dup: false,
            retain: false,
            qos,
            topic,
            packet_id,
            payload,
            properties: match self.0 {
                ProtocolVersion::MQTT3 => None,
                ProtocolVersion::MQTT5 => Some(Default::default()),
            },
        };
        match self.0 {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::Publish(Box::new(publish))),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::Publish(Box::new(publish))),
        }
    }

    pub(crate) fn puback(self, packet_id: NonZeroU16) -> MqttPacket {
        match self.0 {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::PublishAck { packet_id }),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::PublishAck(v5::PublishAck {
                packet_id,
                ..Default::default()
            })),
        }
    }

    pub(crate) fn pubrec(self, packet_id: NonZeroU16) -> MqttPacket {
        match self.0 {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::PublishReceived { packet_id }),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::PublishReceived(v5::PublishAck {
                packet_id,
                ..Default::default()
            })),
        }
    }

    pub(crate) fn pubrel(self, packet_id: NonZeroU16) -> MqttPacket {
        match self.0 {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::PublishRelease { packet_id }),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::PublishRelease(v5::PublishAck2 {
                packet_id,
                ..Default::default()
            })),
        }
    }

    pub(crate) fn pubcomp(self, packet_id: NonZeroU16) -> MqttPacket {
        match self.0 {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::PublishComplete { packet_id }),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::PublishComplete(v5::PublishAck2 {
                packet_id,
                ..Default::default()
            })),
        }
    }

    /// Subscriptions are accepted (tools subscribe before listening) but never needed:
    /// the gateway delivers replies and pushes to the session whether or not it subscribed.
    pub(crate) fn suback(self, packet_id: NonZeroU16, qos: &[QoS]) -> MqttPacket {
        match self.0 {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::SubscribeAck {
                packet_id,
                status: qos.iter().map(|q| v3::SubscribeReturnCode::Success(*q)).collect(),
            }),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::SubscribeAck(v5::SubscribeAck {
                packet_id,
                properties: Default::default(),
                reason_string: None,
                status: qos
                    .iter()
                    .map(|q| match q {
                        QoS::AtMostOnce => v5::SubscribeAckReason::GrantedQos0,
                        QoS::AtLeastOnce => v5::SubscribeAckReason::GrantedQos1,
                        QoS::ExactlyOnce => v5::SubscribeAckReason::GrantedQos2,
                    })
                    .collect(),
            })),
        }
    }

    pub(crate) fn unsuback(self, packet_id: NonZeroU16, count: usize) -> MqttPacket {
        match self.0 {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::UnsubscribeAck { packet_id }),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
                packet_id,
                properties: Default::default(),
                reason_string: None,
                status: vec![v5::UnsubscribeAckReason::Success; count],
            })),
        }
    }

    pub(crate) fn pingresp(self) -> MqttPacket {
        match self.0 {
            ProtocolVersion::MQTT3 => MqttPacket::V3(v3::Packet::PingResponse),
            ProtocolVersion::MQTT5 => MqttPacket::V5(v5::Packet::PingResponse),
        }
    }

    /// A server-side DISCONNECT: MQTT 5 only; MQTT 3.1.1 clients just see the socket close.
    pub(crate) fn disconnect(self, reason: v5::DisconnectReasonCode) -> Option<MqttPacket> {
        match self.0 {
            ProtocolVersion::MQTT3 => None,
            ProtocolVersion::MQTT5 => Some(MqttPacket::V5(v5::Packet::Disconnect(v5::Disconnect {
                reason_code: reason,
                ..Default::default()
            }))),
        }
    }
}

fn packet_name(packet_type: u8) -> &'static str {
    match packet_type >> 4 {
        1 => "CONNECT",
        2 => "CONNACK",
        9 => "SUBACK",
        11 => "UNSUBACK",
        13 => "PINGRESP",
        15 => "AUTH",
        _ => "a server-only packet",
    }
}
