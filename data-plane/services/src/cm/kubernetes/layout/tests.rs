use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kaa_store::{ClientCredential, CredentialKind, CredentialStatus, EndpointToken, TokenStatus, token_hash};
use kube::api::ObjectMeta;

use super::*;

fn layout() -> Layout {
    Layout::new("cm").unwrap()
}

fn stored(id: &str, endpoint: &str, value: &str, status: TokenStatus) -> StoredToken {
    StoredToken {
        token: EndpointToken {
            id: id.into(),
            endpoint_id: endpoint.into(),
            app_name: "meter".into(),
            app_version: "meter-v1".into(),
            status,
            created_at: 42,
        },
        hash: token_hash(value),
    }
}

/// DNS-1123 subdomain: dot-separated DNS labels, at most 253 characters.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

#[test]
fn names_are_dns_1123() {
    let l = layout();
    let ep = "5f1c3a4e-9b0d-4c7e-8a21-3d6f0b9e1c2a";
    assert_eq!(l.endpoint_secret_name(ep), format!("kaa-cm-cm-ep-{ep}"));
    assert_eq!(l.credential_secret_name(ep).unwrap(), format!("kaa-ccm-cm-{ep}"));
    // Other ids are hashed into a valid name, distinct from every plain one.
    let upper = ep.to_uppercase();
    let hashed = l.endpoint_secret_name(&upper);
    assert!(hashed.starts_with("kaa-cm-cm-ep."), "{hashed}");
    assert!(is_dns_subdomain(&hashed), "{hashed}");
    assert_ne!(hashed, l.endpoint_secret_name(&format!("{upper} ")));
    for odd in ["", "a_b", "-a", "a.b", &"a".repeat(300)] {
        assert!(is_dns_subdomain(&l.endpoint_secret_name(odd)), "{odd:?}");
        assert!(l.credential_secret_name(odd).is_err(), "{odd:?}");
    }
    assert!(is_dns_subdomain(&l.endpoint_secret_name(ep)));
    for bad in ["", "CM", "cm_1", "cm.1", "-cm"] {
        assert_eq!(Layout::new(bad).unwrap_err(), LayoutError::Instance(bad.into()));
    }
    assert_eq!(l.selector(), "kaa-rs.dev/cm=cm");
}

#[test]
fn endpoint_secrets_round_trip() {
    let l = layout();
    let a = stored("t-1", "ep-1", "value-a", TokenStatus::Inactive);
    let b = stored("t-2", "ep-1", "value-b", TokenStatus::Suspended);
    let mut secret = l.new_endpoint_secret("kaa-cm-cm-ep-ep-1", &a);
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()[ENDPOINT_ID_ANNOTATION],
        "ep-1"
    );
    put_token(&mut secret, &b);
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], "kaa-rs");
    assert_eq!(labels[CM_LABEL], "cm");
    assert_eq!(labels[KIND_LABEL], "endpoint-tokens");
    assert_eq!(secret.type_.as_deref(), Some("kaa-rs.dev/endpoint-tokens"));
    let raw = String::from_utf8(secret.data.as_ref().unwrap()["t-1"].0.clone()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"sha256": token_hash("value-a"), "appName": "meter",
            "appVersion": "meter-v1", "status": "Inactive", "createdAt": 42})
    );
    assert!(!raw.contains("value-a"), "only the hash is stored");

    let reading = l.read(&secret);
    assert!(reading.problems.is_empty(), "{:?}", reading.problems);
    let Parsed::Endpoint(entry) = reading.parsed else {
        panic!("{reading:?}")
    };
    assert_eq!(entry.endpoint_id, "ep-1");
    assert_eq!(entry.tokens["t-1"], a);
    assert_eq!(entry.tokens["t-2"], b);
    assert_eq!(token_in(&secret, "ep-1", "t-2"), Some(b));
    assert_eq!(token_in(&secret, "ep-1", "t-3"), None);
}

#[test]
fn bad_token_entries_are_skipped_without_quoting_them() {
    let l = layout();
    let mut secret = l.new_endpoint_secret(
        "kaa-cm-cm-ep-ep-1",
        &stored("ok", "ep-1", "v", TokenStatus::Active),
    );
    let data = secret.data.as_mut().unwrap();
    data.insert("garbage".into(), ByteString(b"SECRET-not-json".to_vec()));
    data.insert(
        "short-hash".into(),
        ByteString(br#"{"sha256":"SECRET","appName":"a","appVersion":"v","status":"Active"}"#.to_vec()),
    );
    data.insert(
        "bad-status".into(),
        ByteString(
            format!(
                r#"{{"sha256":"{}","appName":"a","appVersion":"v","status":"Gone"}}"#,
                "a".repeat(64)
            )
            .into_bytes(),
        ),
    );
    let reading = l.read(&secret);
    let Parsed::Endpoint(entry) = &reading.parsed else {
        panic!()
    };
    assert_eq!(entry.tokens.keys().collect::<Vec<_>>(), ["ok"]);
    assert_eq!(reading.problems.len(), 3, "{:?}", reading.problems);
    assert!(
        !reading.problems.join(" ").contains("SECRET"),
        "{:?}",
        reading.problems
    );
}

#[test]
fn credential_secrets_round_trip() {
    let l = layout();
    let password = CredentialEntry {
        credential: ClientCredential {
            id: "c-1".into(),
            client_id: "gw".into(),
            kind: CredentialKind::Password {
                username: "alice".into(),
            },
            status: CredentialStatus::Active,
            created_at: 7,
        },
        password_hash: Some("$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA".into()),
    };
    let secret = l.new_credential_secret("kaa-ccm-cm-c-1", &password);
    assert_eq!(secret.type_.as_deref(), Some(CLIENT_CREDENTIAL_TYPE));
    assert_eq!(
        secret.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["clientId", "createdAt", "passwordHash", "status", "username"]
    );
    assert_eq!(l.read(&secret).parsed, Parsed::Credential(password.clone()));
    assert!(!format!("{password:?}").contains("argon2"));

    let certificate = CredentialEntry {
        credential: ClientCredential {
            id: "c-2".into(),
            client_id: "meter".into(),
            kind: CredentialKind::Certificate {
                issuer: "CN=Devices CA".into(),
                serial: "4660".into(),
            },
            status: CredentialStatus::Revoked,
            created_at: 8,
        },
        password_hash: None,
    };
    let secret = l.new_credential_secret("kaa-ccm-cm-c-2", &certificate);
    assert_eq!(l.read(&secret).parsed, Parsed::Credential(certificate));
}

#[test]
fn hand_written_credentials_are_read_leniently_and_checked_strictly() {
    let l = layout();
    let secret = |data: &[(&str, &str)]| Secret {
        metadata: ObjectMeta {
            name: Some("kaa-ccm-cm-from-blueprint".into()),
            labels: Some(BTreeMap::from([(KIND_LABEL.into(), CLIENT_CREDENTIAL.into())])),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    // No status, no createdAt, a serial with leading zeros: Active, 0, canonical serial.
    let reading = l.read(&secret(&[
        ("clientId", "meter"),
        ("issuer", "CN=CA"),
        ("serial", "004660"),
    ]));
    let Parsed::Credential(entry) = reading.parsed else {
        panic!("{reading:?}")
    };
    assert_eq!(entry.credential.id, "from-blueprint");
    assert_eq!(entry.credential.status, CredentialStatus::Active);
    assert_eq!(
        entry.credential.kind,
        CredentialKind::Certificate {
            issuer: "CN=CA".into(),
            serial: "4660".into()
        }
    );
    for bad in [
        &[("issuer", "CN=CA"), ("serial", "1")][..],
        &[("clientId", "c"), ("username", "u")],
        &[
            ("clientId", "c"),
            ("username", "u"),
            ("passwordHash", "h"),
            ("issuer", "CN=CA"),
            ("serial", "1"),
        ],
        &[("clientId", "c"), ("issuer", "CN=CA"), ("serial", "0x1")],
        &[
            ("clientId", "c"),
            ("username", "u"),
            ("passwordHash", "h"),
            ("status", "Suspended"),
        ],
    ] {
        let reading = l.read(&secret(bad));
        assert_eq!(reading.parsed, Parsed::Ignored, "{bad:?}");
        assert_eq!(reading.problems.len(), 1);
        assert!(
            !reading.problems[0].contains("passwordHash\": "),
            "{:?}",
            reading.problems
        );
    }
}

#[test]
fn hashed_names_carry_the_id_in_the_annotation() {
    let l = layout();
    let id = "5F1C3A4E-9B0D-4C7E-8A21-3D6F0B9E1C2A";
    let name = l.endpoint_secret_name(id);
    let mut token = stored("t", id, "v", TokenStatus::Active);
    token.token.endpoint_id = id.into();
    let mut secret = l.new_endpoint_secret(&name, &token);
    let Parsed::Endpoint(entry) = l.read(&secret).parsed else {
        panic!()
    };
    assert_eq!(entry.endpoint_id, id);
    // An annotation that does not match the name is not believed.
    secret
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ENDPOINT_ID_ANNOTATION.into(), "someone-else".into());
    assert_eq!(l.read(&secret).parsed, Parsed::Ignored);
    // Without the annotation, a plain name says the id.
    let mut plain = l.new_endpoint_secret("kaa-cm-cm-ep-e-1", &stored("t", "e-1", "v", TokenStatus::Active));
    plain.metadata.annotations = None;
    let Parsed::Endpoint(entry) = l.read(&plain).parsed else {
        panic!()
    };
    assert_eq!(entry.endpoint_id, "e-1");
}

#[test]
fn foreign_secrets_are_ignored() {
    let l = layout();
    let mut secret = l.new_endpoint_secret("some-other-name", &stored("t", "e", "v", TokenStatus::Active));
    assert_eq!(l.read(&secret).parsed, Parsed::Ignored);
    secret.metadata.name = Some("kaa-cm-cm-ep-e".into());
    secret
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(KIND_LABEL.into(), "something".into());
    assert_eq!(l.read(&secret).parsed, Parsed::Ignored);
}
