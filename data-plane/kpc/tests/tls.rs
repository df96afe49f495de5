//! MQTT over TLS: client certificates verified by rustls, then mapped to a credential by the
//! (scripted) credential service; handshakes that never block other clients; certificate reload.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{FakeCm, Pki, TlsOutcome, config, echo_extension, server_label, tls_connect, tls_request};
use kaa_blueprint::config::{ClientAuthMode, ClientCertMode};
use kaa_bus::Bus;
use kaa_bus::metrics::Metrics;
use kaa_kpc::Kpc;
use kaa_testkit::{DEADLINE, eventually};
use rmqtt_codec::v3::ConnectAckReason as Code;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn tls_kpc(bus: &Bus, pki: &Pki, certs: ClientCertMode, auth: ClientAuthMode) -> Kpc {
    let mut cfg = config(ClientAuthMode::Password);
    cfg.mqtts = Some(pki.mqtts(certs, auth));
    Kpc::start(cfg, bus.clone(), "kpc-test".into(), &Metrics::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_registered_client_certificate_connects_and_talks() {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    cm.add_token("tok-1", "ep-1", "tid-1");
    echo_extension(&bus).await;
    let pki = Pki::new("Test CA");
    let device = pki.client_cert(4242, (2020, 2100));
    cm.add_cert(&pki.issuer, "4242", "cred-cert");
    let kpc = tls_kpc(&bus, &pki, ClientCertMode::Required, ClientAuthMode::Certificate).await;
    let addr = kpc.mqtts_addr().unwrap();

    let outcome = tls_connect(addr, &pki, Some(&device), None).await;
    let TlsOutcome::Connack(Code::ConnectionAccepted, mut conn) = outcome else {
        panic!("{outcome:?}")
    };
    let (suffix, body) = tls_request(&mut conn, "kp1/av1/ext/tok-1/echo/1", r#"{"over":"tls"}"#).await;
    assert_eq!((suffix.as_str(), body["over"].as_str()), ("/status", Some("tls")));
    kpc.shutdown().await;
}

#[tokio::test]
async fn certificates_that_fail_verification_never_reach_mqtt() {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    let pki = Pki::new("Test CA");
    let rogue = common::ca("Test CA"); // same name, different key
    let untrusted = common::client_cert_from(&rogue, 1, (2020, 2100));
    let expired = pki.client_cert(2, (2020, 2021));
    cm.add_cert(&pki.issuer, "1", "cred-1");
    cm.add_cert(&pki.issuer, "2", "cred-2");
    let kpc = tls_kpc(&bus, &pki, ClientCertMode::Required, ClientAuthMode::Certificate).await;
    let addr = kpc.mqtts_addr().unwrap();

    for (what, cert) in [
        ("untrusted CA", Some(&untrusted)),
        ("expired", Some(&expired)),
        ("none", None),
    ] {
        let outcome = tls_connect(addr, &pki, cert, None).await;
        assert!(matches!(outcome, TlsOutcome::Rejected(_)), "{what}: {outcome:?}");
    }
    assert_eq!(
        cm.credential_requests(),
        0,
        "rustls refused them before any ECAP question"
    );
    kpc.shutdown().await;
}

#[tokio::test]
async fn a_valid_certificate_the_provider_does_not_know_is_not_authorized() {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    cm.add_user("u", "p", "cred-pw");
    let pki = Pki::new("Test CA");
    let unknown = pki.client_cert(777, (2020, 2100));
    let kpc = tls_kpc(
        &bus,
        &pki,
        ClientCertMode::Optional,
        ClientAuthMode::PasswordOrCertificate,
    )
    .await;
    let addr = kpc.mqtts_addr().unwrap();

    let outcome = tls_connect(addr, &pki, Some(&unknown), None).await;
    assert_eq!(outcome.code(), Some(Code::NotAuthorized), "{outcome:?}");
    assert_eq!(cm.credential_requests(), 1);
    // password-or-certificate: without a certificate the password decides.
    let outcome = tls_connect(addr, &pki, None, Some(("u", "p"))).await;
    assert_eq!(outcome.code(), Some(Code::ConnectionAccepted), "{outcome:?}");
    let outcome = tls_connect(addr, &pki, None, Some(("u", "nope"))).await;
    assert_eq!(outcome.code(), Some(Code::BadUserNameOrPassword), "{outcome:?}");
    // ...and with an unknown certificate, the password still can.
    let outcome = tls_connect(addr, &pki, Some(&unknown), Some(("u", "p"))).await;
    assert_eq!(outcome.code(), Some(Code::ConnectionAccepted), "{outcome:?}");
    kpc.shutdown().await;
}

#[tokio::test]
async fn a_stalled_handshake_does_not_block_other_clients() {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    let pki = Pki::new("Test CA");
    let device = pki.client_cert(1, (2020, 2100));
    cm.add_cert(&pki.issuer, "1", "cred-1");
    let mut cfg = config(ClientAuthMode::Password);
    cfg.mqtts = Some(pki.mqtts(ClientCertMode::Required, ClientAuthMode::Certificate));
    cfg.limits.connect_timeout_ms = 3_000;
    let kpc = Kpc::start(cfg, bus.clone(), "kpc-test".into(), &Metrics::new())
        .await
        .unwrap();
    let addr = kpc.mqtts_addr().unwrap();

    // Some say nothing; some start a ClientHello record (a 16 KiB one) and stop.
    let mut stalled = Vec::new();
    for i in 0..10 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00])
                .await
                .unwrap();
        }
        stalled.push(s);
    }
    for _ in 0..3 {
        let outcome = tls_connect(addr, &pki, Some(&device), None).await;
        assert_eq!(outcome.code(), Some(Code::ConnectionAccepted), "{outcome:?}");
    }
    // The others were served while every stalled handshake was still pending...
    for s in &stalled {
        let mut byte = [0u8; 1];
        assert!(
            matches!(s.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a stalled connection was already closed"
        );
    }
    // ...and those are dropped at the connect timeout.
    for mut s in stalled {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    kpc.shutdown().await;
}

#[tokio::test]
async fn a_rewritten_certificate_is_served_without_a_restart() {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    cm.add_user("u", "p", "cred-1");
    let pki = Pki::new("Test CA");
    let kpc = tls_kpc(&bus, &pki, ClientCertMode::None, ClientAuthMode::Password).await;
    let addr = kpc.mqtts_addr().unwrap();

    let TlsOutcome::Connack(Code::ConnectionAccepted, conn) =
        tls_connect(addr, &pki, None, Some(("u", "p"))).await
    else {
        panic!("first connection refused")
    };
    assert_eq!(server_label(&conn), "first");
    pki.write_server_cert("second");
    eventually(DEADLINE, "the new certificate to be served", || async {
        match tls_connect(addr, &pki, None, Some(("u", "p"))).await {
            TlsOutcome::Connack(_, conn) => (server_label(&conn) == "second").then_some(()),
            TlsOutcome::Rejected(_) => None,
        }
    })
    .await;
    kpc.shutdown().await;
}

#[tokio::test]
async fn unusable_tls_files_stop_the_start() {
    let bus = Bus::in_process();
    let pki = Pki::new("Test CA");
    let mut cfg = config(ClientAuthMode::Password);
    let mut mqtts = pki.mqtts(ClientCertMode::Required, ClientAuthMode::Certificate);
    mqtts.tls.client_ca_file = None;
    cfg.mqtts = Some(mqtts.clone());
    let err = Kpc::start(cfg.clone(), bus.clone(), "k".into(), &Metrics::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("clientCaFile"), "{err}");

    mqtts.tls.client_certs = ClientCertMode::None;
    mqtts.tls.key_file = pki.path("missing.key").display().to_string();
    cfg.mqtts = Some(mqtts);
    let err = Kpc::start(cfg, bus, "k".into(), &Metrics::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing.key"), "{err}");
}
