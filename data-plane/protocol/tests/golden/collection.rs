//! 13/DSTP and 14/TSTP: no README examples, so built from the values the RFCs describe.

use kaa_protocol::collection::{DataPoint, DataSamplesEvent, PointValue, TimeSeriesEvent};

use super::*;

#[test]
fn dstp_data_samples() {
    let samples = vec![br#"{"humidity":88}"#.to_vec(), b"[]".to_vec()];
    let (_, f) = check(&DataSamplesEvent {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: TIMEOUT,
        app_version_name: APP_VERSION.into(),
        endpoint_id: ENDPOINT_ID.into(),
        content_type: "application/json".into(),
        data_samples: samples.clone(),
    });
    assert_eq!(f["contentType"], string("application/json"));
    assert_eq!(
        f["dataSamples"],
        Value::Array(samples.into_iter().map(Value::Bytes).collect())
    );
}

#[test]
fn tstp_every_value_type_in_its_union_branch() {
    // The schema's value union: [boolean, int, long, float, double, string, bytes, null]; each
    // value with what the generic decoder must see in its branch (the index in this list).
    let cases = [
        (PointValue::Boolean(true), Value::Boolean(true)),
        (PointValue::Int(-3), Value::Int(-3)),
        (PointValue::Long(1 << 40), Value::Long(1 << 40)),
        (PointValue::Float(1.5), Value::Float(1.5)),
        (PointValue::Double(-2.25), Value::Double(-2.25)),
        (PointValue::String("{\"x\":1}".into()), string("{\"x\":1}")),
        (PointValue::Bytes(vec![0, 255]), Value::Bytes(vec![0, 255])),
        (PointValue::Null, Value::Null),
    ];
    let name = |i: usize| format!("v{i}");
    let (_, f) = check(&TimeSeriesEvent {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: TIMEOUT,
        app_version_name: APP_VERSION.into(),
        endpoint_id: ENDPOINT_ID.into(),
        time_series_name: "humidity".into(),
        data_points: vec![DataPoint {
            ingestion_timestamp: TIMESTAMP + 1,
            timestamp: TIMESTAMP,
            values: cases
                .iter()
                .enumerate()
                .map(|(i, (v, _))| (name(i), v.clone()))
                .collect(),
        }],
    });
    let Value::Array(points) = &f["dataPoints"] else {
        panic!("dataPoints is not an array: {:?}", f["dataPoints"]);
    };
    let [Value::Record(point)] = points.as_slice() else {
        panic!("not one record: {points:?}");
    };
    let point: BTreeMap<_, _> = point.iter().cloned().collect();
    assert_eq!(point["timestamp"], Value::Long(TIMESTAMP));
    let Value::Map(map) = &point["values"] else {
        panic!("values is not a map: {:?}", point["values"]);
    };
    for (i, (_, want)) in cases.into_iter().enumerate() {
        let branch = u32::try_from(i).unwrap();
        assert_eq!(map[&name(i)], some(branch, want), "value {i}");
    }
}
