//! DCX, EPTS and EPL on one in-process bus: a device batch through DCX is stored by EPTS before
//! DCX answers; DCX's answer when a reliable receiver fails or stays silent; EPL keeps the newest
//! connectivity in EPR metadata whatever order events arrive in.

use std::{collections::BTreeMap, time::Duration};

use axum::Router;
use bytes::Bytes;
use kaa_bus::Bus;
use kaa_protocol::{
    avro::AvroRecord,
    collection::{DataSamplesEvent, DataSamplesProcessed},
    elce::{ConnectedEvent, DisconnectedEvent},
    esp::{ClientData, ExtensionData},
    subject,
};
use kaa_services::{
    dcx::{self, DataReceiver, DcxAppVersion},
    epl,
    epr::Application,
    epts::{self, EptsState},
};
use kaa_testkit::eventually;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn dcx_config(receivers: Vec<DataReceiver>, timeout_ms: u64) -> dcx::Config {
    dcx::Config {
        app_versions: BTreeMap::from([(
            APP_V1.to_owned(),
            DcxAppVersion {
                receivers,
                max_batch: 10,
            },
        )]),
        receiver_timeout_ms: timeout_ms,
        ..Default::default()
    }
}

fn reliable(name: &str) -> DataReceiver {
    DataReceiver {
        name: name.into(),
        reliable: true,
    }
}

fn epts_config() -> epts::Config {
    let application = serde_json::from_value(json!({"autoExtract": true, "timestampPath": "ts"})).unwrap();
    epts::Config {
        app_versions: vec![Application {
            name: APP.into(),
            versions: vec![APP_V1.into()],
        }],
        applications: BTreeMap::from([(APP.to_owned(), application)]),
        ..Default::default()
    }
}

fn samples(payload: &str) -> ClientData {
    ClientData {
        correlation_id: "req-1".into(),
        timestamp: 5_000,
        app_version_name: APP_V1.into(),
        endpoint_id: Some("ep-1".into()),
        resource_path: "/json".into(),
        request_id: Some(1),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

async fn send(bus: &Bus, data: &ClientData) -> ExtensionData {
    let reply = bus
        .request(
            &subject::esp_client_data("dcx"),
            Bytes::from(data.to_avro()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    ExtensionData::from_avro(&reply.payload).unwrap()
}

/// DCX serving on `bus` (replica `dcx-0`); waits until it answers.
async fn start_dcx(bus: &Bus, config: dcx::Config, stop: &CancellationToken) {
    let (b, s) = (bus.clone(), stop.clone());
    tokio::spawn(async move { dcx::serve(b, config, "dcx-0", s).await.unwrap() });
    eventually(Duration::from_secs(5), "DCX to answer", || async {
        bus.request(
            &subject::esp_client_data("dcx"),
            Bytes::from(samples("").to_avro()),
            Duration::from_millis(500),
        )
        .await
        .ok()
    })
    .await;
}

#[tokio::test]
async fn a_batch_is_stored_before_dcx_answers() {
    let bus = Bus::in_process();
    // A database file, as `kaa up` has: its points go through the store's own writer thread,
    // and the REST API reads them through the pool.
    let dir = tempfile::tempdir().unwrap();
    let store = kaa_store::Store::open(dir.path().join("kaa.db")).await.unwrap();
    let state = EptsState::new(store, epts_config()).unwrap();
    let stop = CancellationToken::new();
    let (b, s, st) = (bus.clone(), stop.clone(), state.clone());
    tokio::spawn(async move { epts::serve(b, st, s).await.unwrap() });
    start_dcx(&bus, dcx_config(vec![reliable("epts")], 5_000), &stop).await;

    let reply = send(&bus, &samples(r#"[{"t": 1, "ts": 1000}, {"t": 2}]"#)).await;
    assert_eq!(
        (reply.status_code, reply.payload.as_deref()),
        (200, None),
        "{reply:?}"
    );
    // Stored already: no polling needed.
    let app: Router = epts::router(state);
    let uri = format!("/epts/api/v1/applications/{APP}/time-series/data?timeSeriesName=auto~t&fromDate=0");
    let data = call(&app, "GET", &uri, None, &[]).await;
    assert_eq!(
        data.body,
        json!([{"ep-1": {"auto~t": [
            {"timestamp": "1970-01-01T00:00:01.000Z", "values": {"value": 1}},
            // Without its own time a sample gets the gateway's receive time.
            {"timestamp": "1970-01-01T00:00:05.000Z", "values": {"value": 2}},
        ]}}])
    );

    let reply = send(&bus, &samples(r#"{"t": "#)).await;
    assert_eq!(reply.status_code, 400);
    let reply = send(&bus, &samples(&format!("[{}]", ["1"; 11].join(",")))).await;
    assert_eq!(reply.status_code, 413);
    stop.cancel();
}

#[tokio::test]
async fn epts_follows_a_transmitter_a_live_config_change_adds() {
    let bus = Bus::in_process();
    let store = kaa_store::Store::open_in_memory().await.unwrap();
    let mut config = epts_config();
    config.data_sample_transmitters = vec!["other_dcx".into()];
    let state = EptsState::new(store, config.clone()).unwrap();
    let stop = CancellationToken::new();
    let (b, s, st) = (bus.clone(), stop.clone(), state.clone());
    tokio::spawn(async move { epts::serve(b, st, s).await.unwrap() });
    start_dcx(&bus, dcx_config(vec![reliable("epts")], 300), &stop).await;
    let reply = send(&bus, &samples(r#"[{"t": 1}]"#)).await;
    assert_eq!(
        reply.status_code, 504,
        "EPTS does not follow `dcx` yet: {reply:?}"
    );

    config.data_sample_transmitters = vec!["dcx".into()];
    state.live_config().set(config);
    eventually(
        Duration::from_secs(10),
        "EPTS to store what `dcx` sends",
        || async { (send(&bus, &samples(r#"[{"t": 2}]"#)).await.status_code == 200).then_some(()) },
    )
    .await;
    stop.cancel();
}

#[tokio::test]
async fn failing_and_silent_receivers_are_the_devices_error() {
    let bus = Bus::in_process();
    let stop = CancellationToken::new();
    // A receiver that refuses every batch, and one that never answers.
    let mut events = bus
        .subscribe(&subject::dstp_data_samples("dcx"), Some("broken"))
        .await
        .unwrap();
    let b = bus.clone();
    tokio::spawn(async move {
        while let Some(msg) = events.next().await {
            let event = DataSamplesEvent::from_avro(&msg.payload).unwrap();
            let answer = DataSamplesProcessed {
                correlation_id: event.correlation_id,
                receiver_service_instance_name: "broken".into(),
                status_code: 500,
                reason_phrase: Some("disk full".into()),
                ..Default::default()
            };
            b.publish(msg.reply_to.as_deref().unwrap(), Bytes::from(answer.to_avro()))
                .await
                .unwrap();
        }
    });
    start_dcx(&bus, dcx_config(vec![reliable("broken")], 300), &stop).await;
    let reply = send(&bus, &samples(r#"{"t": 1}"#)).await;
    assert_eq!(reply.status_code, 500);
    assert_eq!(
        reply.reason_phrase.as_deref(),
        Some("data receivers failed: broken: 500 disk full")
    );
    stop.cancel();

    let stop = CancellationToken::new();
    let bus = Bus::in_process();
    start_dcx(&bus, dcx_config(vec![reliable("silent")], 300), &stop).await;
    let reply = send(&bus, &samples(r#"{"t": 1}"#)).await;
    assert_eq!(reply.status_code, 504);
    assert_eq!(
        reply.reason_phrase.as_deref(),
        Some("no confirmation from silent within 300 ms")
    );
    // No reliable receiver: answered at once.
    let unreliable = DataReceiver {
        name: "silent".into(),
        reliable: false,
    };
    let bus = Bus::in_process();
    start_dcx(&bus, dcx_config(vec![unreliable], 300), &stop).await;
    assert_eq!(send(&bus, &samples(r#"{"t": 1}"#)).await.status_code, 200);
    stop.cancel();
}

#[tokio::test]
async fn epl_keeps_the_newest_connectivity_whatever_the_event_order() {
    let stack = Stack::start_with(true, false).await;
    let endpoint_id = register(&stack.epr, APP_V1, None).await;
    let stop = CancellationToken::new();
    let (b, s) = (stack.bus.clone(), stop.clone());
    tokio::spawn(async move { epl::serve(b, epl::Config::default(), s).await.unwrap() });
    let mut points = stack
        .bus
        .subscribe(&subject::tstp_data_points("epl", "connectivity"), None)
        .await
        .unwrap();
    let endpoints = BTreeMap::from([(endpoint_id.clone(), APP_V1.to_owned())]);
    let metadata = || async {
        call(
            &stack.epr,
            "GET",
            &format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"),
            None,
            &[],
        )
        .await
        .body
    };
    // EPL subscribes asynchronously: repeat the first event until it shows.
    let connected = ConnectedEvent {
        timestamp: 2_000,
        endpoints: endpoints.clone(),
        originator_replica_id: "kpc-1".into(),
        ..Default::default()
    };
    eventually(Duration::from_secs(5), "connected = true", || async {
        stack
            .bus
            .publish(&subject::elce_connected("kpc"), Bytes::from(connected.to_avro()))
            .await
            .unwrap();
        (metadata().await == json!({"connected": true, "connectivity_ts": 2_000})).then_some(())
    })
    .await;
    // A stale disconnect from another replica (the old session, noticed late), then a newer one.
    for (at, replica) in [(1_000, "kpc-0"), (3_000, "kpc-1")] {
        let event = DisconnectedEvent {
            timestamp: at,
            endpoints: endpoints.clone(),
            originator_replica_id: replica.into(),
            ..Default::default()
        };
        stack
            .bus
            .publish(&subject::elce_disconnected("kpc"), Bytes::from(event.to_avro()))
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(5), "connected = false at 3000", || async {
        (metadata().await == json!({"connected": false, "connectivity_ts": 3_000})).then_some(())
    })
    .await;
    // Every event is a point of the connectivity series, the stale one included.
    let mut seen = Vec::new();
    while seen.len() < 2 || !seen.contains(&(3_000, 0)) {
        let msg = tokio::time::timeout(Duration::from_secs(5), points.next())
            .await
            .unwrap()
            .unwrap();
        let event = kaa_protocol::collection::TimeSeriesEvent::from_avro(&msg.payload).unwrap();
        let point = &event.data_points[0];
        let value = match point.values["value"] {
            kaa_protocol::collection::PointValue::Int(v) => v,
            ref other => panic!("{other:?}"),
        };
        seen.push((point.timestamp, value));
    }
    assert!(seen.contains(&(1_000, 0)), "{seen:?}");
    stop.cancel();
    stack.stop().await;
}
