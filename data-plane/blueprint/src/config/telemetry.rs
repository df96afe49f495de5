//! Configs of the telemetry services: EPL (endpoint connectivity), DCX (2/DCP data collection)
//! and EPTS (time series). Each has the rendered `*Config` a running service loads and the
//! `*Settings` a Blueprint may give it under `spec.services[].config`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::EprApplication;
use crate::ServiceKind;

fn default_timeout_ms() -> u64 {
    5_000
}

/// DCX and EPTS handlers mostly wait: DCX for its receivers' answers, EPTS for the commit its
/// points share with others (group commit). Throughput is this bound over that wait, so it is
/// generous: at 256, `kaa-load reqresp` (1,600 requests in flight) stalled at ~12,000 requests/s
/// with the CPU partly idle; at 4,096 it reached ~17,000. The gateway's per-connection limit
/// still bounds what devices can pile up.
fn default_max_in_flight() -> usize {
    4096
}

// ---------------------------------------------------------------------------------------------
// EPL

/// EPL, the endpoint lifecycle service: turns 9/ELCE connectivity events into EPR metadata and
/// 14/TSTP `connectivity` data points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EplConfig {
    /// Instance name: the queue group of its event subscription, the TSTP transmitter name.
    pub instance: String,
    /// The EPR instance that owns metadata (reached over 19/EPMMP).
    pub epr_instance: String,
    /// The Blueprint's settings, as given (defaults filled in).
    #[serde(default)]
    pub settings: EplSettings,
}

impl Default for EplConfig {
    fn default() -> Self {
        EplConfig {
            instance: ServiceKind::Epl.as_str().to_owned(),
            epr_instance: ServiceKind::Epr.as_str().to_owned(),
            settings: EplSettings::default(),
        }
    }
}

/// What a Blueprint may set on an `epl` service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EplSettings {
    /// Metadata key holding `true` / `false` (Kaa clients expect `connected`).
    pub connected_key: String,
    /// Metadata key holding the time of the last connectivity change, ms since the epoch.
    pub connectivity_ts_key: String,
    /// How long to wait for each 19/EPMMP answer from EPR.
    pub request_timeout_ms: u64,
    /// Endpoints whose changes one replica applies concurrently (each endpoint's in order).
    pub max_in_flight: usize,
}

impl Default for EplSettings {
    fn default() -> Self {
        EplSettings {
            connected_key: "connected".into(),
            connectivity_ts_key: "connectivity_ts".into(),
            request_timeout_ms: default_timeout_ms(),
            max_in_flight: 64,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DCX

/// DCX, the 2/DCP data collection extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DcxConfig {
    /// Extension instance name (topic level 3, subjects, queue group, DSTP transmitter name).
    pub instance: String,
    /// Every application version this instance serves, with its receivers and batch limit.
    pub app_versions: BTreeMap<String, DcxAppVersion>,
    /// How long a batch waits for its reliable receivers before the device gets `/error` 504.
    #[serde(default = "default_timeout_ms")]
    pub receiver_timeout_ms: u64,
    /// Device requests handled concurrently by one replica.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for DcxConfig {
    fn default() -> Self {
        DcxConfig {
            instance: ServiceKind::Dcx.as_str().to_owned(),
            app_versions: BTreeMap::new(),
            receiver_timeout_ms: default_timeout_ms(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

/// How DCX handles one application version's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DcxAppVersion {
    /// The 13/DSTP receivers DCX knows of; it waits for the reliable ones.
    pub receivers: Vec<DataReceiver>,
    /// Most samples in one batch; larger batches get `/error` 413.
    pub max_batch: usize,
}

/// A 13/DSTP receiver service instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataReceiver {
    /// Its instance name (the `receiverServiceInstanceName` of its answers).
    pub name: String,
    /// Whether the device's answer waits for this receiver's `DataSamplesProcessed`.
    #[serde(default = "yes")]
    pub reliable: bool,
}

fn yes() -> bool {
    true
}

/// What a Blueprint may set on a `dcx` service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DcxSettings {
    /// Receivers of every version; absent: every `epts` instance of the Blueprint, reliable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receivers: Option<Vec<DataReceiver>>,
    /// Batch limit of every version.
    pub max_batch: usize,
    pub receiver_timeout_ms: u64,
    pub max_in_flight: usize,
    /// Per application version overrides (versions this instance serves).
    pub app_versions: BTreeMap<String, DcxAppVersionSettings>,
}

impl Default for DcxSettings {
    fn default() -> Self {
        DcxSettings {
            receivers: None,
            max_batch: 1_000,
            receiver_timeout_ms: default_timeout_ms(),
            max_in_flight: default_max_in_flight(),
            app_versions: BTreeMap::new(),
        }
    }
}

/// One application version's overrides of [`DcxSettings`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DcxAppVersionSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receivers: Option<Vec<DataReceiver>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
}

// ---------------------------------------------------------------------------------------------
// EPTS

/// EPTS, the endpoint time series service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EptsConfig {
    /// Instance name: the queue group, the `receiverServiceInstanceName` of its answers.
    pub instance: String,
    /// Applications and their versions: events name a version, time series belong to the application.
    pub app_versions: Vec<EprApplication>,
    /// 13/DSTP transmitters (DCX instances) whose data samples it stores.
    pub data_sample_transmitters: Vec<String>,
    /// 14/TSTP transmitters (EPL instances, ...) whose data points it stores.
    pub time_series_transmitters: Vec<String>,
    /// Time series extraction and retention per application name.
    #[serde(default)]
    pub applications: BTreeMap<String, EptsApplication>,
    /// How often expired points are deleted.
    #[serde(default = "default_retention_interval_ms")]
    pub retention_interval_ms: u64,
    /// Events handled concurrently by one replica.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for EptsConfig {
    fn default() -> Self {
        EptsConfig {
            instance: ServiceKind::Epts.as_str().to_owned(),
            app_versions: Vec::new(),
            data_sample_transmitters: vec![ServiceKind::Dcx.as_str().to_owned()],
            time_series_transmitters: vec![ServiceKind::Epl.as_str().to_owned()],
            applications: BTreeMap::new(),
            retention_interval_ms: default_retention_interval_ms(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

fn default_retention_interval_ms() -> u64 {
    60_000
}

/// What EPTS does with one application's data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EptsApplication {
    /// Time series extracted from every data sample.
    pub time_series: Vec<TimeSeriesSpec>,
    /// Every top-level number (and boolean) of a sample becomes the series `auto~{field}` with
    /// the value `value`.
    pub auto_extract: bool,
    /// Where auto-extracted points take their time (JSON pointer or dotted path; ms since the
    /// epoch or ISO 8601); absent or missing in a sample: the time DCX received it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_path: Option<String>,
    /// Points older than this many days are deleted; absent: kept forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// One time series extracted from data samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeSeriesSpec {
    pub name: String,
    /// The values of each point; a sample with none of them present yields no point.
    pub values: Vec<TimeSeriesValue>,
    /// Where the point's time is in a sample; absent (or missing in a sample): receive time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_path: Option<String>,
}

/// One value of a time series point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeSeriesValue {
    /// Its name in the point (`value` in Kaa's single-value series).
    pub name: String,
    /// Where it is in a sample: JSON pointer (`/sensors/0/t`) or dotted path (`sensors.0.t`).
    pub path: String,
    /// What type it must have; a value of another type is skipped and counted.
    #[serde(default, rename = "type")]
    pub value_type: ValueType,
}

/// The JSON type a time series value must have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    #[default]
    Number,
    Boolean,
    String,
    /// Any JSON value; objects and arrays are kept as JSON.
    Any,
}

/// What a Blueprint may set on an `epts` service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EptsSettings {
    /// Absent: every `dcx` instance of the Blueprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_sample_transmitters: Option<Vec<String>>,
    /// Absent: every `epl` instance of the Blueprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_series_transmitters: Option<Vec<String>>,
    /// Per application name (applications of the Blueprint).
    pub applications: BTreeMap<String, EptsApplication>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_reject_unknown_fields() {
        let epl: EplSettings = serde_json::from_str(r#"{"connectedKey":"online"}"#).unwrap();
        assert_eq!(epl.connected_key, "online");
        assert_eq!(epl.connectivity_ts_key, "connectivity_ts");
        assert!(serde_json::from_str::<EplSettings>(r#"{"connected":"x"}"#).is_err());
        let cfg: EplConfig = serde_json::from_str(
            r#"{"instance":"epl","eprInstance":"epr","settings":{"connectedKey":"on"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.settings.connected_key, "on");

        let dcx: DcxSettings =
            serde_json::from_str(r#"{"appVersions":{"v1":{"maxBatch":5,"receivers":[{"name":"a"}]}}}"#)
                .unwrap();
        assert_eq!(dcx.max_batch, 1_000);
        let v1 = &dcx.app_versions["v1"];
        assert_eq!(v1.max_batch, Some(5));
        assert_eq!(
            v1.receivers.as_deref(),
            Some(
                &[DataReceiver {
                    name: "a".into(),
                    reliable: true
                }][..]
            )
        );
        assert!(serde_json::from_str::<DcxSettings>(r#"{"maxbatch":1}"#).is_err());

        let epts: EptsSettings = serde_json::from_str(
            r#"{"applications":{"meter":{"retentionDays":7,"timeSeries":[
                {"name":"t","values":[{"name":"value","path":"/t"}]}]}}}"#,
        )
        .unwrap();
        let meter = &epts.applications["meter"];
        assert_eq!(meter.retention_days, Some(7));
        assert_eq!(meter.time_series[0].values[0].value_type, ValueType::Number);
        assert!(serde_json::from_str::<EptsSettings>(r#"{"applications":{"m":{"series":[]}}}"#).is_err());
    }
}
