//! The [`AvroRecord`] trait: how every RFC message becomes bytes on the bus and back.
//!
//! Wire format: an Avro binary *datum* written with the RFC schema file, with no object
//! container header, no single-object marker and no fingerprint. The RFCs only say
//! "Avro object"; a bare datum is what Kaa's own services exchange and the only form a
//! fixed-schema NATS subject needs.
//!
//! Encoding goes through apache-avro's schema-aware serde path, so the schema file, not
//! the Rust struct, decides field order and union branch order (`["string","null"]` and
//! `["null","string"]` produce different bytes). Rust structs declare fields in schema
//! order with `#[serde(rename_all = "camelCase")]`; `bytes` fields use
//! `apache_avro::serde::bytes` / `bytes_opt` so they are written as Avro `bytes`, not as
//! an array of ints.
//!
//! Adding a record is a struct plus one line: `avro_record!(MyRecord, "NNNN/file.avsc");`.

use std::fmt;

use apache_avro::{
    Schema, reader::datum::GenericDatumReader, schema::Name, writer::datum::GenericDatumWriter,
};
use serde::{Serialize, de::DeserializeOwned};

/// A Kaa RFC message with a fixed Avro schema.
pub trait AvroRecord: Serialize + DeserializeOwned + Sized {
    /// The RFC schema file, `include_str!`'d from `data-plane/protocol/schemas/NNNN/*.avsc`
    /// (a byte-identical copy of the RFC repository file).
    const SCHEMA_JSON: &'static str;

    /// The parsed schema (parsed once per type).
    fn schema() -> &'static Schema;

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
    Decode {
        record: &'static str,
        detail: apache_avro::Error,
    },
    /// A valid datum was followed by more bytes; a message is exactly one datum, so this
    /// usually means the sender used another schema (or a container/single-object header).
    #[error("invalid Avro {record} message: {count} unexpected byte(s) after the record")]
    TrailingBytes { record: &'static str, count: usize },
}

/// Caps what decoding one Avro value may allocate, so that a corrupt length prefix on the bus
/// cannot reserve hundreds of MiB. Process-wide and settable once (the first call wins), so only
/// binaries call it, at start-up; returns the cap in force.
pub fn limit_decode_allocations(max_bytes: usize) -> usize {
    apache_avro::util::max_allocation_bytes(max_bytes)
}

/// Parses a schema file compiled into the crate.
///
/// # Panics
/// Only if a checked-in schema file is not a valid Avro schema: a build defect, caught by
/// this crate's tests (every record is encoded and decoded there), never by input data.
#[expect(
    clippy::expect_used,
    reason = "compile-time constant input, verified by tests"
)]
pub(crate) fn parse_schema(json: &'static str) -> Schema {
    Schema::parse_str(json).expect("checked-in RFC schema file must parse")
}

/// Cached writer and reader for one record type (one per type, in a `static`).
///
/// Building them resolves the schema's names; doing that once keeps per-message work to
/// the actual encoding.
pub(crate) struct Codec {
    record: &'static str,
    writer: GenericDatumWriter<'static>,
    reader: GenericDatumReader<'static>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// # Panics
    /// Only if the schema's names cannot be resolved: a build defect (see [`parse_schema`]).
    #[expect(
        clippy::expect_used,
        reason = "compile-time constant input, verified by tests"
    )]
    pub(crate) fn new(schema: &'static Schema) -> Self {
        let record = schema.name().map_or("record", Name::name);
        let writer = GenericDatumWriter::builder(schema)
            // Only affects types with two serde representations (none of ours); pinning
            // it keeps the bytes independent of apache-avro's process-wide default.
            .human_readable(false)
            .build()
            .expect("RFC schema names must resolve");
        let reader = GenericDatumReader::builder(schema)
            .human_readable(false)
            .build()
            .expect("RFC schema names must resolve");
        Self {
            record,
            writer,
            reader,
        }
    }

    /// # Panics
    /// Only if the Rust struct does not match its schema (a field of another Avro type, or
    /// an unknown field): a build defect that every record's round-trip test exercises.
    /// Values cannot make a matching struct fail: all our field types are total.
    #[expect(clippy::expect_used, reason = "struct/schema agreement is verified by tests")]
    pub(crate) fn encode<T: Serialize>(&self, value: &T) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.writer
            .write_ser(&mut out, value)
            .expect("record struct must match its RFC schema");
        out
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, AvroError> {
        let mut rest = bytes;
        let value = self
            .reader
            .read_deser::<T>(&mut rest)
            .map_err(|detail| AvroError::Decode {
                record: self.record,
                detail,
            })?;
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

            use $crate::avro::{AvroError, AvroRecord, Codec, parse_schema};

            static SCHEMA: OnceLock<apache_avro::Schema> = OnceLock::new();
            static CODEC: OnceLock<Codec> = OnceLock::new();

            impl AvroRecord for $ty {
                const SCHEMA_JSON: &'static str =
                    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/", $path));

                fn schema() -> &'static apache_avro::Schema {
                    SCHEMA.get_or_init(|| parse_schema(Self::SCHEMA_JSON))
                }

                fn to_avro(&self) -> Vec<u8> {
                    CODEC
                        .get_or_init(|| Codec::new(Self::schema()))
                        .encode(self)
                }

                fn from_avro(bytes: &[u8]) -> Result<Self, AvroError> {
                    CODEC
                        .get_or_init(|| Codec::new(Self::schema()))
                        .decode(bytes)
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
        assert_eq!(T::schema().name().unwrap().name(), name);
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
