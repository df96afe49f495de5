//! Kaa wire formats, pure: no sockets, no files, no clocks beyond [`now_millis`].
//!
//! Everything that two kaa-rs processes (or a kaa-rs process and a device, or a Kaa
//! service written in another language) must agree on byte for byte lives here, so
//! that the gateway, the bus handlers and the tests all share one definition.
//!
//! # Layout
//!
//! | Module | Owns | RFC |
//! |---|---|---|
//! | [`topic`] | parsing device MQTT topics into borrowed parts, formatting `/status`, `/error` topics | 1/KP |
//! | [`error`] | the JSON error payload sent on `/error` topics | 1/KP (0001 schema) |
//! | [`avro`] | the [`avro::AvroRecord`] trait: schema loading, Avro binary encode/decode | 3/ISM |
//! | [`esp`] | `ClientData` (gateway -> extension), `ExtensionData` (extension -> gateway) | 4/ESP |
//! | [`elce`] | endpoint `connected` / `disconnected` and `registered` / `unregistered` events | 9/ELCE |
//! | [`ecap`] | endpoint token and client credential validation, token status transitions, revocation events | 16/ECAP |
//! | [`epmmp`] | endpoint metadata get / patch / keys-get requests and responses | 19/EPMMP |
//! | [`scmp`] | service configuration update announcements, replicas' applied-version reports | 17/SCMP |
//! | [`subject`] | NATS subject builders | 3/ISM |
//!
//! `schemas/NNNN/` holds byte-identical copies of the RFC schema files; every record is
//! encoded strictly against its file (they are compiled in with `include_str!`).
//!
//! A device message travels through this crate like this: the gateway parses the
//! PUBLISH topic with [`topic::RequestTopic::parse`], wraps the payload in an
//! [`esp::ClientData`], encodes it with [`avro::AvroRecord::to_avro`] and publishes it on
//! [`subject::esp_client_data`]. The extension decodes it with
//! [`avro::AvroRecord::from_avro`], answers with an [`esp::ExtensionData`], and the gateway
//! turns that back into an MQTT topic with [`topic::response_topic`] (and, for failures,
//! an [`error::KpError`] payload).

pub mod avro;
pub mod collection;
pub mod ecap;
pub mod elce;
pub mod epmmp;
pub mod error;
pub mod esp;
pub mod scmp;
pub mod subject;
pub mod topic;

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the UNIX epoch, for the `timestamp` field every RFC message carries.
///
/// A clock set before 1970 yields 0 rather than a panic; one far in the future saturates.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_millis_is_a_plausible_wall_clock_time() {
        // 2020-01-01T00:00:00Z in ms; any sane test machine is later than that.
        let t = now_millis();
        assert!(t > 1_577_836_800_000, "{t}");
        assert!(now_millis() >= t);
    }
}
