//! Data samples -> time series points, by an application's [`EptsApplication`] settings. Pure.
//!
//! For every sample and every configured series: read the values at their paths; a value of the
//! wrong type is skipped and reported (the rest of the point, and of the batch, is kept); a value
//! that is absent is just absent; a series with no value left gives no point. The point's time is
//! the sample's timestamp (ms since the epoch, or an ISO 8601 string) when the series names a
//! `timestampPath` and the sample has it, else the receive time; an unreadable timestamp skips
//! that point (and is reported), because storing it at a made-up time would mislead.
//!
//! With `autoExtract`, every top-level number or boolean of an object sample (other than its
//! timestamp field) becomes the series `auto~{field}` with the single value `value`.

use kaa_blueprint::config::{EptsApplication, TimeSeriesSpec, ValueType};
use serde_json::{Map, Value};

/// Prefix of auto-extracted series names (as in Kaa).
pub const AUTO_PREFIX: &str = "auto~";

/// The value name of auto-extracted and single-value series.
pub const VALUE: &str = "value";

/// How many skip reasons are kept for the report (the count is always complete).
const MAX_REASONS: usize = 5;

/// One extracted point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub series: String,
    /// ms since the epoch.
    pub ts: i64,
    pub values: Map<String, Value>,
    /// Index of the sample it came from (orders points of equal time).
    pub sample: usize,
}

/// What was skipped: every skipped value or point counts, the first few are described.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    pub count: usize,
    pub reasons: Vec<String>,
}

impl Skipped {
    pub fn add(&mut self, reason: impl FnOnce() -> String) {
        self.count += 1;
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(reason());
        }
    }

    /// One line for logs and `reasonPhrase`s; `None` when nothing was skipped.
    pub fn summary(&self) -> Option<String> {
        (self.count > 0).then(|| {
            let more = self.count.saturating_sub(self.reasons.len());
            let tail = if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            };
            format!("skipped {}: {}{tail}", self.count, self.reasons.join("; "))
        })
    }
}

/// A value path as a JSON pointer: `/a/0/b` stays, the dotted `a.0.b` is converted.
pub fn pointer(path: &str) -> String {
    if path.starts_with('/') || path.is_empty() {
        return path.to_owned();
    }
    path.split('.')
        .map(|segment| format!("/{}", segment.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// Whether `path` is usable: a JSON pointer (`/...`) or a dotted path without empty segments.
pub fn is_valid_path(path: &str) -> bool {
    !path.is_empty() && (path.starts_with('/') || path.split('.').all(|s| !s.is_empty()))
}

/// A sample's timestamp: integral ms since the epoch, or an ISO 8601 / RFC 3339 string.
pub fn timestamp(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(ms), _) => Ok(ms),
            (None, Some(f)) if f.is_finite() && f.abs() < 9.0e15 => Ok(f.round() as i64),
            _ => Err(format!("{n} is not a time in ms")),
        },
        Value::String(s) => crate::epts::dates::parse_iso(s),
        other => Err(format!("{} is not a timestamp", kind(other))),
    }
}

/// The JSON type name of a value, for reasons.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn has_type(value: &Value, expected: ValueType) -> bool {
    match expected {
        ValueType::Number => value.is_number(),
        ValueType::Boolean => value.is_boolean(),
        ValueType::String => value.is_string(),
        ValueType::Any => true,
    }
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Number => "a number",
        ValueType::Boolean => "a boolean",
        ValueType::String => "a string",
        ValueType::Any => "any value",
    }
}

/// The time of a point of `sample`: from `path` when given and present, else `received`.
fn point_time(sample: &Value, path: Option<&str>, received: i64) -> Result<i64, String> {
    match path.and_then(|p| sample.pointer(&pointer(p))) {
        None => Ok(received),
        Some(v) => timestamp(v).map_err(|e| format!("timestamp at {}: {e}", path.unwrap_or_default())),
    }
}

/// Extracts the points of every sample (`received`: when the platform got them, ms).
pub fn extract(app: &EptsApplication, samples: &[Value], received: i64) -> (Vec<Point>, Skipped) {
    let mut points = Vec::new();
    let mut skipped = Skipped::default();
    for (i, sample) in samples.iter().enumerate() {
        for spec in &app.time_series {
            if let Some(point) = series_point(spec, sample, i, received, &mut skipped) {
                points.push(point);
            }
        }
        if app.auto_extract {
            auto_points(
                app.timestamp_path.as_deref(),
                sample,
                i,
                received,
                &mut points,
                &mut skipped,
            );
        }
    }
    (points, skipped)
}

fn series_point(
    spec: &TimeSeriesSpec,
    sample: &Value,
    index: usize,
    received: i64,
    skipped: &mut Skipped,
) -> Option<Point> {
    let mut values = Map::new();
    for v in &spec.values {
        let Some(found) = sample.pointer(&pointer(&v.path)) else {
            continue;
        };
        if has_type(found, v.value_type) {
            values.insert(v.name.clone(), found.clone());
        } else {
            skipped.add(|| {
                format!(
                    "sample {index}: {} of {} at {} is {}, not {}",
                    v.name,
                    spec.name,
                    v.path,
                    kind(found),
                    type_name(v.value_type)
                )
            });
        }
    }
    if values.is_empty() {
        return None;
    }
    match point_time(sample, spec.timestamp_path.as_deref(), received) {
        Ok(ts) => Some(Point {
            series: spec.name.clone(),
            ts,
            values,
            sample: index,
        }),
        Err(e) => {
            skipped.add(|| format!("sample {index}: {} point: {e}", spec.name));
            None
        }
    }
}

fn auto_points(
    timestamp_path: Option<&str>,
    sample: &Value,
    index: usize,
    received: i64,
    points: &mut Vec<Point>,
    skipped: &mut Skipped,
) {
    let Value::Object(fields) = sample else {
        skipped.add(|| format!("sample {index}: {} has no fields to auto-extract", kind(sample)));
        return;
    };
    // The timestamp field is the points' time, not a series of its own.
    let own_timestamp = timestamp_path.map(pointer);
    let numeric = fields.iter().filter(|(name, value)| {
        (value.is_number() || value.is_boolean()) && own_timestamp.as_deref() != Some(pointer(name).as_str())
    });
    let mut numeric = numeric.peekable();
    if numeric.peek().is_none() {
        return;
    }
    let ts = match point_time(sample, timestamp_path, received) {
        Ok(ts) => ts,
        Err(e) => {
            skipped.add(|| format!("sample {index}: {e}"));
            return;
        }
    };
    for (name, value) in numeric {
        points.push(Point {
            series: format!("{AUTO_PREFIX}{name}"),
            ts,
            values: Map::from_iter([(VALUE.to_owned(), value.clone())]),
            sample: index,
        });
    }
}

#[cfg(test)]
mod tests {
    use kaa_blueprint::config::TimeSeriesValue;
    use serde_json::json;

    use super::*;

    fn value(name: &str, path: &str, value_type: ValueType) -> TimeSeriesValue {
        TimeSeriesValue {
            name: name.into(),
            path: path.into(),
            value_type,
        }
    }

    fn app() -> EptsApplication {
        EptsApplication {
            time_series: vec![
                TimeSeriesSpec {
                    name: "temperature".into(),
                    values: vec![value("value", "/temp", ValueType::Number)],
                    timestamp_path: Some("ts".into()),
                },
                TimeSeriesSpec {
                    name: "location".into(),
                    values: vec![
                        value("lat", "gps.lat", ValueType::Number),
                        value("lon", "/gps/lon", ValueType::Number),
                        value("label", "gps.label", ValueType::String),
                    ],
                    timestamp_path: None,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn paths_are_pointers_or_dotted() {
        assert_eq!(pointer("/a/0"), "/a/0");
        assert_eq!(pointer("a.0.b"), "/a/0/b");
        assert_eq!(pointer("a~b/c"), "/a~0b~1c");
        assert!(is_valid_path("/a") && is_valid_path("a.b"));
        assert!(!is_valid_path("") && !is_valid_path("a..b") && !is_valid_path(".a"));
    }

    #[test]
    fn timestamps_are_ms_or_iso_8601() {
        assert_eq!(timestamp(&json!(1_700_000_000_123_i64)), Ok(1_700_000_000_123));
        assert_eq!(timestamp(&json!(1.6)), Ok(2));
        assert_eq!(
            timestamp(&json!("2024-01-02T03:04:05.678Z")),
            Ok(1_704_164_645_678)
        );
        assert_eq!(
            timestamp(&json!("2024-01-02T05:04:05+02:00")),
            Ok(1_704_164_645_000)
        );
        assert!(timestamp(&json!("yesterday")).is_err());
        assert!(timestamp(&json!(true)).unwrap_err().contains("a boolean"));
    }

    #[test]
    fn configured_series_take_their_values_and_times() {
        let samples = [
            json!({"temp": 21.5, "ts": 1000, "gps": {"lat": 1, "lon": 2}}),
            json!({"temp": 22, "gps": {"lat": 3, "label": "home"}}),
        ];
        let (points, skipped) = extract(&app(), &samples, 5000);
        assert_eq!(skipped, Skipped::default());
        let got: Vec<_> = points
            .iter()
            .map(|p| (p.series.as_str(), p.ts, Value::Object(p.values.clone()), p.sample))
            .collect();
        assert_eq!(
            got,
            [
                ("temperature", 1000, json!({"value": 21.5}), 0),
                ("location", 5000, json!({"lat": 1, "lon": 2}), 0),
                ("temperature", 5000, json!({"value": 22}), 1),
                ("location", 5000, json!({"lat": 3, "label": "home"}), 1),
            ]
        );
    }

    #[test]
    fn wrong_types_skip_the_value_and_bad_timestamps_the_point() {
        let samples = [
            json!({"temp": "hot", "gps": {"lat": "north", "lon": 2}}),
            json!({"temp": 20, "ts": "not a time"}),
            json!([1, 2]),
        ];
        let (points, skipped) = extract(&app(), &samples, 5000);
        let got: Vec<_> = points
            .iter()
            .map(|p| (p.series.as_str(), Value::Object(p.values.clone())))
            .collect();
        assert_eq!(got, [("location", json!({"lon": 2}))]);
        assert_eq!(skipped.count, 3);
        assert_eq!(
            skipped.reasons,
            [
                "sample 0: value of temperature at /temp is a string, not a number",
                "sample 0: lat of location at gps.lat is a string, not a number",
                "sample 1: temperature point: timestamp at ts: invalid ISO 8601 time \"not a time\"",
            ]
        );
        assert!(skipped.summary().unwrap().starts_with("skipped 3: sample 0"));
    }

    #[test]
    fn auto_extraction_makes_a_series_of_every_top_level_number() {
        let app = EptsApplication {
            auto_extract: true,
            timestamp_path: Some("timestamp".into()),
            ..Default::default()
        };
        let samples = [
            json!({"temperature": 21, "on": true, "name": "x", "nested": {"a": 1}, "timestamp": 7}),
            json!({"humidity": 40}),
            json!("text"),
        ];
        let (points, skipped) = extract(&app, &samples, 5000);
        let got: Vec<_> = points
            .iter()
            .map(|p| (p.series.as_str(), p.ts, p.values[VALUE].clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("auto~on", 7, json!(true)),
                ("auto~temperature", 7, json!(21)),
                ("auto~humidity", 5000, json!(40)),
            ]
        );
        assert_eq!(skipped.count, 1, "{skipped:?}");
    }

    #[test]
    fn the_summary_counts_everything_but_lists_a_few() {
        let mut s = Skipped::default();
        for i in 0..8 {
            s.add(|| format!("r{i}"));
        }
        assert_eq!(s.summary().unwrap(), "skipped 8: r0; r1; r2; r3; r4; and 3 more");
        assert_eq!(Skipped::default().summary(), None);
    }
}
