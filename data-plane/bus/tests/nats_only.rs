//! NATS-specific behaviour that has no in-process counterpart: connecting and connection state.

use std::time::Duration;

use kaa_bus::{Bus, BusError};
use kaa_testkit::{NatsServer, eventually, free_port};

#[tokio::test]
async fn connect_to_nothing_is_an_error() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    match Bus::connect_nats(&url).await {
        Err(BusError::Nats(reason)) => assert!(reason.contains(&url), "{reason}"),
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn is_connected_follows_the_server() {
    let server = NatsServer::start().await;
    let bus = Bus::connect_nats(&server.url).await.unwrap();
    assert!(bus.is_connected());
    drop(server);
    eventually(
        Duration::from_secs(10),
        "the client to notice the server is gone",
        || {
            let connected = bus.is_connected();
            async move { (!connected).then_some(()) }
        },
    )
    .await;
}
