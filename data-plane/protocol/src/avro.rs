//! The [`AvroRecord`] trait: how every RFC message becomes bytes on the bus and back.
//!
//! Wire format: an Avro binary *datum* written with the RFC schema file, with no object
//! container header, no single-object marker and no fingerprint. The RFCs only say
//! "Avro object"; a bare datum is what Kaa's own services exchange and the only form a
//! fixed-schema NATS subject needs.
//!
//! Encoding and decoding go through serde_avro_fast, straight between the Rust struct and the
//! bytes with the schema file as guide: the schema, not the struct, decides field order and union
//! branch order (`["string","null"]` and `["null","string"]` produce different bytes). Rust structs
//! declare fields in schema order with `#[serde(rename_all = "camelCase")]`; `bytes` fields use
//! `serde_bytes` so they are written as Avro `bytes`, not as an array of ints. The tests check every
//! record against apache-avro's generic decoder, an independent implementation.
//!
//! Adding a record is a struct plus one line: `avro_record!(MyRecord, "NNNN/file.avsc");`.

use serde::{Serialize, de::DeserializeOwned};
use serde_avro_fast::{
    Schema,
    de::{DeError, DeserializerConfig, DeserializerState, read::ReaderRead},
    ser::SerializerConfig,
};

/// A Kaa RFC message with a fixed Avro schema.
pub trait AvroRecord: Serialize + DeserializeOwned + Sized {
    /// The RFC schema file, `include_str!`'d from `data-plane/protocol/schemas/NNNN/*.avsc`
    /// (a byte-identical copy of the RFC repository file).
    const SCHEMA_JSON: &'static str;

    /// Avro binary datum, no container header.
    fn to_avro(&self) -> Vec<u8>;

    /// Decodes one Avro binary datum; the whole input must be consumed.
    fn from_avro(bytes: &[u8]) -> Result<Self, AvroError>;
}

/// Why bytes from the bus could not be decoded as a given record.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// The bytes are not a valid datum of the record's schema (truncated, bad union
    /// index, invalid UTF-8 in a string, absurd length prefix, ...).
    #[error("invalid Avro {record} message: {detail}")]
    Decode { record: &'static str, detail: DeError },
    /// A valid datum was followed by more bytes; a message is exactly one datum, so this
    /// usually means the sender used another schema (or a container/single-object header).
    #[error("invalid Avro {record} message: {count} unexpected byte(s) after the record")]
    TrailingBytes { record: &'static str, count: usize },
}

/// One record type's parsed schema (one per type, in a `static`).
#[derive(Debug)]
pub(crate) struct Codec {
    record: &'static str,
    schema: Schema,
}

impl Codec {
    /// # Panics
    /// Only if a checked-in schema file is not a valid Avro schema: a build defect, caught by
    /// this crate's tests (every record is encoded and decoded there), never by input data.
    #[expect(
        clippy::expect_used,
        reason = "compile-time constant input, verified by tests"
    )]
    pub(crate) fn new(record: &'static str, json: &'static str) -> Self {
        let schema = json.parse().expect("checked-in RFC schema file must parse");
        Self { record, schema }
    }

    /// # Panics
    /// Only if the Rust struct does not match its schema (a field of another Avro type, or
    /// an unknown field): a build defect that every record's round-trip test exercises.
    /// Values cannot make a matching struct fail: all our field types are total.
    #[expect(clippy::expect_used, reason = "struct/schema agreement is verified by tests")]
    pub(crate) fn encode<T: Serialize>(&self, value: &T) -> Vec<u8> {
        let config = &mut SerializerConfig::new(&self.schema);
        serde_avro_fast::to_datum(value, Vec::with_capacity(128), config)
            .expect("record struct must match its RFC schema")
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, AvroError> {
        let mut rest = bytes;
        // Read through `&mut &[u8]` to see what is left over afterwards. Nothing in a valid datum
        // is longer, or has more elements, than the datum has bytes: these bounds stop a corrupt
        // length prefix from reserving memory the message cannot fill.
        let mut reader = ReaderRead::new(&mut rest);
        reader.max_alloc_size = bytes.len();
        let mut config = DeserializerConfig::new(&self.schema);
        config.max_seq_size = bytes.len();
        let mut state = DeserializerState::with_config(reader, config);
        let value = T::deserialize(state.deserializer()).map_err(|detail| AvroError::Decode {
            record: self.record,
            detail,
        })?;
        drop(state);
        if !rest.is_empty() {
            return Err(AvroError::TrailingBytes {
                record: self.record,
                count: rest.len(),
            });
        }
        Ok(value)
    }
}

/// Implements [`AvroRecord`] for `$ty` with the schema file `schemas/$path`.
macro_rules! avro_record {
    ($ty:ty, $path:literal) => {
        const _: () = {
            use std::sync::OnceLock;

            use $crate::avro::{AvroError, AvroRecord, Codec};

            static CODEC: OnceLock<Codec> = OnceLock::new();

            fn codec() -> &'static Codec {
                CODEC.get_or_init(|| Codec::new(stringify!($ty), <$ty>::SCHEMA_JSON))
            }

            impl AvroRecord for $ty {
                const SCHEMA_JSON: &'static str =
                    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/", $path));

                fn to_avro(&self) -> Vec<u8> {
                    codec().encode(self)
                }

                fn from_avro(bytes: &[u8]) -> Result<Self, AvroError> {
                    codec().decode(bytes)
                }
            }
        };
    };
}
pub(crate) use avro_record;

/// Test helpers shared by the record modules.
#[cfg(test)]
pub(crate) mod testing {
    use std::fmt::Debug;

    use super::AvroRecord;

    /// Encodes, decodes, and checks the value survived and the schema is the RFC's.
    pub fn round_trip<T: AvroRecord + PartialEq + Debug>(value: &T) -> Vec<u8> {
        let bytes = value.to_avro();
        let back = T::from_avro(&bytes).unwrap();
        assert_eq!(&back, value);
        bytes
    }

    /// The record name in the schema file matches `name` (guards against a wrong path).
    pub fn assert_schema_name<T: AvroRecord>(name: &str) {
        let schema = apache_avro::Schema::parse_str(T::SCHEMA_JSON).unwrap();
        assert_eq!(schema.name().unwrap().name(), name);
    }

    /// Every strict prefix of a valid datum is rejected (no panic, no partial value),
    /// and so is the datum with a trailing byte.
    pub fn assert_rejects_truncation_and_trailing<T: AvroRecord + Debug>(bytes: &[u8]) {
        for len in 0..bytes.len() {
            assert!(
                T::from_avro(&bytes[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        let err = T::from_avro(&longer).unwrap_err();
        assert!(
            matches!(err, super::AvroError::TrailingBytes { count: 1, .. }),
            "{err}"
        );
    }
}
