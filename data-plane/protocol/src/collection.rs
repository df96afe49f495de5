//! 13/DSTP and 14/TSTP: data collected from endpoints, as broadcast between services.
//!
//! 13/DSTP: a transmitter (DCX) broadcasts each batch of an endpoint's data samples as a
//! [`DataSamplesEvent`] on [`crate::subject::dstp_data_samples`]; when it wants to know the batch
//! was stored it sets `replyTo`, and each receiver answers [`DataSamplesProcessed`].
//!
//! 14/TSTP: a transmitter broadcasts time series data points as a [`TimeSeriesEvent`] on
//! [`crate::subject::tstp_data_points`] (one subject per series); receivers answer
//! [`TimeSeriesProcessed`] when `replyTo` is set. Schemas: `schemas/0013/`, `schemas/0014/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::avro::avro_record;

/// `contentType` of JSON data samples, the only one kaa-rs transmits.
pub const JSON: &str = "application/json";

/// A batch of data samples of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSamplesEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub app_version_name: String,
    pub endpoint_id: String,
    pub content_type: String,
    /// Each sample encoded per `content_type` (JSON: one UTF-8 JSON value each).
    #[serde(with = "samples")]
    pub data_samples: Vec<Vec<u8>>,
}
avro_record!(DataSamplesEvent, "0013/0013-ep-data-samples-event.avsc");

/// A receiver's answer to a [`DataSamplesEvent`] with `replyTo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSamplesProcessed {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub receiver_service_instance_name: String,
    pub status_code: i32,
    pub reason_phrase: Option<String>,
}
avro_record!(DataSamplesProcessed, "0013/0013-ep-data-samples-processed.avsc");

/// Data points of one time series of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeSeriesEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub app_version_name: String,
    pub endpoint_id: String,
    pub time_series_name: String,
    pub data_points: Vec<DataPoint>,
}
avro_record!(TimeSeriesEvent, "0014/0014-ep-time-series-event.avsc");

/// One point of a time series: when it was measured, when the platform got it, and its values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataPoint {
    /// When the platform received it (ms).
    pub ingestion_timestamp: i64,
    /// When it was measured (ms).
    pub timestamp: i64,
    pub values: BTreeMap<String, PointValue>,
}

/// A data point value: the schema's union `[boolean, int, long, float, double, string, bytes,
/// null]`. Composite JSON values travel as their JSON text in `String`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PointValue {
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    String(String),
    #[serde(with = "serde_bytes")]
    Bytes(Vec<u8>),
    /// Written as a variant carrying "nothing", so that the union's `null` branch is chosen by
    /// name: a plain unit variant would go to the first branch that takes a name (`string`).
    #[serde(serialize_with = "serialize_null")]
    Null,
}

fn serialize_null<S: serde::Serializer>(serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_unit()
}

/// A receiver's answer to a [`TimeSeriesEvent`] with `replyTo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeSeriesProcessed {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub status_code: i32,
    pub reason_phrase: Option<String>,
}
avro_record!(TimeSeriesProcessed, "0014/0014-ep-time-series-processed.avsc");

/// `array<bytes>`: each element as Avro `bytes`, not as an array of ints.
mod samples {
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
    use serde::ser::{Serialize, Serializer};

    struct Sample<'a>(&'a [u8]);

    impl Serialize for Sample<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    pub fn serialize<S: Serializer>(samples: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(samples.iter().map(|b| Sample(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        struct Samples;
        impl<'de> Visitor<'de> for Samples {
            type Value = Vec<Vec<u8>>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(sample) = seq.next_element::<ByteBuf>()? {
                    out.push(sample.0);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Samples)
    }

    /// One sample, read from Avro `bytes`.
    struct ByteBuf(Vec<u8>);

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Bytes;
            impl Visitor<'_> for Bytes {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
            }
            d.deserialize_byte_buf(Bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::{
        AvroRecord,
        testing::{assert_rejects_truncation_and_trailing, assert_schema_name, round_trip},
    };

    #[test]
    fn schemas_are_the_rfc_records() {
        assert_schema_name::<DataSamplesEvent>("DataSamplesEvent");
        assert_schema_name::<DataSamplesProcessed>("DataSamplesProcessed");
        assert_schema_name::<TimeSeriesEvent>("TimeSeriesEvent");
        assert_schema_name::<TimeSeriesProcessed>("TimeSeriesProcessed");
    }

    #[test]
    fn data_samples_event_wire_layout() {
        let event = DataSamplesEvent {
            correlation_id: "c".into(),
            timestamp: 1,
            timeout: 0,
            app_version_name: "v".into(),
            endpoint_id: "e".into(),
            content_type: "j".into(),
            data_samples: vec![b"{}".to_vec()],
        };
        // Array of bytes: block count 1, length 2, `{}`, end of array.
        let expected = [
            0x02, b'c', 0x02, 0x00, 0x02, b'v', 0x02, b'e', 0x02, b'j', 0x02, 0x04, b'{', b'}', 0x00,
        ];
        assert_eq!(round_trip(&event), expected);
        assert_rejects_truncation_and_trailing::<DataSamplesEvent>(&expected);
    }

    #[test]
    fn processed_answers_wire_layout() {
        let ok = DataSamplesProcessed {
            correlation_id: "c".into(),
            timestamp: 1,
            timeout: 0,
            receiver_service_instance_name: "r".into(),
            status_code: 200,
            reason_phrase: None,
        };
        // 200 zig-zag = 400 = 0x90 0x03; union branch 0 = null.
        let expected = [0x02, b'c', 0x02, 0x00, 0x02, b'r', 0x90, 0x03, 0x00];
        assert_eq!(round_trip(&ok), expected);
        let failed = TimeSeriesProcessed {
            correlation_id: "c".into(),
            timestamp: 1,
            timeout: 0,
            status_code: 500,
            reason_phrase: Some("x".into()),
        };
        let expected = [0x02, b'c', 0x02, 0x00, 0xe8, 0x07, 0x02, 0x02, b'x'];
        assert_eq!(round_trip(&failed), expected);
    }

    #[test]
    fn absurd_counts_and_lengths_are_rejected() {
        let head = [0x02, b'c', 0x02, 0x00, 0x02, b'v', 0x02, b'e', 0x02, b'j'];
        // A block of 2^30 samples, then a sample 2^30 bytes long: neither fits in the message.
        let count = [0x80, 0x80, 0x80, 0x80, 0x08, 0x02, b'x'];
        let length = [0x02, 0x80, 0x80, 0x80, 0x80, 0x08, b'x'];
        for tail in [&count[..], &length[..]] {
            let bytes = [&head[..], tail].concat();
            let err = DataSamplesEvent::from_avro(&bytes).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("invalid Avro DataSamplesEvent message"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_boolean_value_is_union_branch_zero() {
        let event = TimeSeriesEvent {
            correlation_id: "c".into(),
            timestamp: 1,
            timeout: 0,
            app_version_name: "v".into(),
            endpoint_id: "e".into(),
            time_series_name: "t".into(),
            data_points: vec![DataPoint {
                ingestion_timestamp: 2,
                timestamp: 1,
                values: BTreeMap::from([("k".to_owned(), PointValue::Boolean(true))]),
            }],
        };
        let expected = [
            0x02, b'c', 0x02, 0x00, 0x02, b'v', 0x02, b'e', 0x02, b't', // header fields
            0x02, 0x04, 0x02, // one point: ingestion 2, timestamp 1
            0x02, 0x02, b'k', 0x00, 0x01, 0x00, // map {k: branch 0 (boolean) true}
            0x00, // end of points
        ];
        assert_eq!(round_trip(&event), expected);
    }
}
