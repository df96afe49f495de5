//! A 2/DCP `/json` payload -> the batch's samples. Pure.
//!
//! A JSON array is a batch, one sample per element; any other JSON value (the official client
//! sends one object) is a batch of one. Each sample may be of any JSON type, as 2/DCP allows; a
//! single sample that is itself an array must therefore be sent inside a batch (`[[1,2]]`).
//! Invalid JSON and an empty batch are 400, more samples than `maxBatch` 413.

use serde_json::value::RawValue;

/// Why a payload is not a usable batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("invalid JSON: {0}")]
    Invalid(String),
    #[error("empty batch: send a JSON object or a non-empty array of samples")]
    Empty,
    #[error("batch of {size} samples is over the limit of {max}")]
    TooLarge { size: usize, max: usize },
}

impl BatchError {
    pub fn status_code(&self) -> i32 {
        match self {
            Self::Invalid(_) | Self::Empty => 400,
            Self::TooLarge { .. } => 413,
        }
    }
}

/// The samples of `payload`, each the JSON text of one value (13/DSTP's `application/json`),
/// copied as the device wrote it: the payload is checked, not rebuilt (receivers parse it).
pub fn parse(payload: &[u8], max_batch: usize) -> Result<Vec<Vec<u8>>, BatchError> {
    let Some(first) = payload.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(BatchError::Empty);
    };
    let invalid = |e: serde_json::Error| BatchError::Invalid(e.to_string());
    let samples: Vec<&RawValue> = if *first == b'[' {
        serde_json::from_slice(payload).map_err(invalid)?
    } else {
        vec![serde_json::from_slice(payload).map_err(invalid)?]
    };
    if samples.is_empty() {
        return Err(BatchError::Empty);
    }
    if samples.len() > max_batch {
        return Err(BatchError::TooLarge {
            size: samples.len(),
            max: max_batch,
        });
    }
    Ok(samples.iter().map(|s| s.get().as_bytes().to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_one_sample_and_an_array_a_batch() {
        assert_eq!(parse(br#" {"t": 1} "#, 10), Ok(vec![br#"{"t": 1}"#.to_vec()]));
        assert_eq!(
            parse(br#"[{"t": 1}, 2, "x", [3]]"#, 10),
            Ok(vec![
                br#"{"t": 1}"#.to_vec(),
                b"2".to_vec(),
                br#""x""#.to_vec(),
                b"[3]".to_vec()
            ])
        );
        assert_eq!(parse(b"42", 1), Ok(vec![b"42".to_vec()]));
    }

    #[test]
    fn bad_batches_say_why() {
        assert!(matches!(parse(b"{nope", 10), Err(BatchError::Invalid(_))));
        assert!(matches!(parse(b"[1, 2", 10), Err(BatchError::Invalid(_))));
        assert!(matches!(parse(b"[1] 2", 10), Err(BatchError::Invalid(_))));
        assert!(matches!(parse(b"{} x", 10), Err(BatchError::Invalid(_))));
        assert!(
            matches!(parse(b"[\"\xff\"]", 10), Err(BatchError::Invalid(_))),
            "not UTF-8"
        );
        assert_eq!(parse(b"[]", 10), Err(BatchError::Empty));
        assert_eq!(parse(b"  ", 10), Err(BatchError::Empty));
        assert_eq!(parse(b"", 10), Err(BatchError::Empty));
        let err = parse(b"[1,2,3]", 2).unwrap_err();
        assert_eq!(err, BatchError::TooLarge { size: 3, max: 2 });
        assert_eq!(err.status_code(), 413);
        assert_eq!(err.to_string(), "batch of 3 samples is over the limit of 2");
        assert_eq!(BatchError::Empty.status_code(), 400);
    }
}
