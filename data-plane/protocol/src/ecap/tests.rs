//! Unit tests of the 16/ECAP records: wire layouts, union branches, schema names, JSON and Debug
//! output, certificate identities.

use super::*;
use crate::avro::testing::{assert_rejects_truncation_and_trailing, assert_schema_name, round_trip};

#[test]
fn request_wire_layout() {
    let req = EndpointTokenValidationRequest {
        correlation_id: "c".into(),
        timestamp: -1,
        timeout: 64,
        app_name: "a".into(),
        token: "t".into(),
    };
    // timestamp -1 -> zig-zag 1; timeout 64 -> zig-zag 128 = varint 0x80 0x01.
    let expected = [0x02, b'c', 0x01, 0x80, 0x01, 0x02, b'a', 0x02, b't'];
    assert_eq!(round_trip(&req), expected);
    assert_rejects_truncation_and_trailing::<EndpointTokenValidationRequest>(&expected);
}

#[test]
fn response_union_branches() {
    let unknown = EndpointTokenValidationResponse {
        correlation_id: "c".into(),
        timestamp: 0,
        timeout: 0,
        token_id: None,
        endpoint_id: None,
        status_code: 1,
        reason_phrase: None,
    };
    // tokenId/endpointId are ["string","null"] (null = 1), reasonPhrase ["null","string"] (null = 0).
    assert_eq!(
        round_trip(&unknown),
        [0x02, b'c', 0x00, 0x00, 0x02, 0x02, 0x02, 0x00]
    );
    let known = EndpointTokenValidationResponse {
        token_id: Some("k".into()),
        endpoint_id: Some("e".into()),
        reason_phrase: Some("r".into()),
        ..unknown
    };
    let expected = [
        0x02, b'c', 0x00, 0x00, 0x00, 0x02, b'k', 0x00, 0x02, b'e', 0x02, 0x02, 0x02, b'r',
    ];
    assert_eq!(round_trip(&known), expected);
    assert_rejects_truncation_and_trailing::<EndpointTokenValidationResponse>(&expected);
}

#[test]
fn schemas_are_the_rfc_records() {
    assert_schema_name::<EndpointTokenValidationRequest>("EndpointTokenValidationRequest");
    assert_schema_name::<EndpointTokenValidationResponse>("EndpointTokenValidationResponse");
    assert_schema_name::<EndpointTokenStatusTransitionRequest>("EndpointTokenStatusTransitionRequest");
    assert_schema_name::<EndpointTokenStatusTransitionResponse>("EndpointTokenStatusTransitionResponse");
    assert_schema_name::<ClientUsernamePasswordValidationRequest>("ClientUsernamePasswordValidationRequest");
    assert_schema_name::<ClientUsernamePasswordValidationResponse>(
        "ClientUsernamePasswordValidationResponse",
    );
    assert_schema_name::<ClientCertificateValidationRequest>("ClientCertificateValidationRequest");
    assert_schema_name::<ClientCertificateValidationResponse>("ClientCertificateValidationResponse");
    assert_schema_name::<EndpointTokenRevokedEvent>("EndpointTokenRevokedEvent");
    assert_schema_name::<ClientCredentialRevokedEvent>("ClientCredentialRevokedEvent");
}

#[test]
fn status_transition_wire_layout() {
    let req = EndpointTokenStatusTransitionRequest {
        correlation_id: "c".into(),
        timestamp: 1,
        timeout: 0,
        app_name: "a".into(),
        token: "t".into(),
        target_status: "Revoked".into(),
    };
    let mut expected = vec![0x02, b'c', 0x02, 0x00, 0x02, b'a', 0x02, b't', 0x0e];
    expected.extend_from_slice(b"Revoked");
    assert_eq!(round_trip(&req), expected);
    assert_rejects_truncation_and_trailing::<EndpointTokenStatusTransitionRequest>(&expected);

    let resp = EndpointTokenStatusTransitionResponse {
        correlation_id: "c".into(),
        timestamp: 0,
        timeout: 0,
        status_code: 409,
        reason_phrase: Some("r".into()),
    };
    // 409 -> zig-zag 818 = varint 0xb2 0x06; reasonPhrase ["null","string"]: string = 1.
    let expected = [0x02, b'c', 0x00, 0x00, 0xb2, 0x06, 0x02, 0x02, b'r'];
    assert_eq!(round_trip(&resp), expected);
    assert_rejects_truncation_and_trailing::<EndpointTokenStatusTransitionResponse>(&expected);
}

#[test]
fn username_password_union_branches() {
    // username/password are ["string","null"]: string = 0, null = 1.
    let anonymous = ClientUsernamePasswordValidationRequest {
        correlation_id: "c".into(),
        ..Default::default()
    };
    assert_eq!(round_trip(&anonymous), [0x02, b'c', 0x00, 0x00, 0x02, 0x02]);
    let req = ClientUsernamePasswordValidationRequest {
        username: Some("u".into()),
        password: Some("p".into()),
        ..anonymous
    };
    let expected = [0x02, b'c', 0x00, 0x00, 0x00, 0x02, b'u', 0x00, 0x02, b'p'];
    assert_eq!(round_trip(&req), expected);
    assert_rejects_truncation_and_trailing::<ClientUsernamePasswordValidationRequest>(&expected);

    let resp = ClientUsernamePasswordValidationResponse {
        correlation_id: "c".into(),
        timestamp: 0,
        timeout: 0,
        credential_id: Some("k".into()),
        client_id: None,
        status_code: 1,
        reason_phrase: None,
    };
    let expected = [0x02, b'c', 0x00, 0x00, 0x00, 0x02, b'k', 0x02, 0x02, 0x00];
    assert_eq!(round_trip(&resp), expected);
    assert_rejects_truncation_and_trailing::<ClientUsernamePasswordValidationResponse>(&expected);
}

#[test]
fn password_is_not_in_debug_output() {
    let req = ClientUsernamePasswordValidationRequest {
        username: Some("alice".into()),
        password: Some("s3cret-pw".into()),
        ..Default::default()
    };
    let shown = format!("{req:?}");
    assert!(shown.contains("alice"), "{shown}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
}

#[test]
fn provision_messages_are_camel_case_json_and_hide_the_token() {
    let req = EndpointTokenProvisionRequest {
        correlation_id: "c".into(),
        timestamp: 1,
        timeout: 2,
        endpoint_id: "e".into(),
        app_name: "a".into(),
        app_version: "a-v1".into(),
        token: "tok-secret".into(),
    };
    let json: serde_json::Value = serde_json::from_slice(&req.to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"correlationId": "c", "timestamp": 1, "timeout": 2,
            "endpointId": "e", "appName": "a", "appVersion": "a-v1", "token": "tok-secret"})
    );
    assert_eq!(
        EndpointTokenProvisionRequest::from_json(&req.to_json()).unwrap(),
        req
    );
    assert!(!format!("{req:?}").contains("tok-secret"));
    assert!(EndpointTokenProvisionRequest::from_json(b"{\"x\":1}").is_err());

    let resp = EndpointTokenProvisionResponse {
        correlation_id: "c".into(),
        token_id: Some("t".into()),
        status_code: 201,
        ..Default::default()
    };
    let text = String::from_utf8(resp.to_json()).unwrap();
    assert_eq!(
        text,
        r#"{"correlationId":"c","timestamp":0,"timeout":0,"tokenId":"t","statusCode":201}"#
    );
    assert_eq!(
        EndpointTokenProvisionResponse::from_json(text.as_bytes()).unwrap(),
        resp
    );
}

#[test]
fn certificate_identity_from_pem_and_der() {
    let mut params = rcgen::CertificateParams::new(vec!["meter-42".to_owned()]).unwrap();
    // 0x0100 = 256; rcgen writes the serial as given.
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0x00]));
    let mut issuer = rcgen::DistinguishedName::new();
    issuer.push(rcgen::DnType::CommonName, "Devices CA");
    issuer.push(rcgen::DnType::OrganizationName, "Example");
    params.distinguished_name = issuer;
    let key = rcgen::KeyPair::generate().unwrap();
    // Self-signed: the issuer is the subject above.
    let cert = params.self_signed(&key).unwrap();
    let from_pem = CertificateIdentity::from_pem(cert.pem().as_bytes()).unwrap();
    assert_eq!(
        from_pem,
        CertificateIdentity {
            issuer: "CN=Devices CA, O=Example".into(),
            serial_number: "256".into(),
        }
    );
    assert_eq!(CertificateIdentity::from_der(cert.der()).unwrap(), from_pem);
    assert_eq!(
        CertificateIdentity::from_pem(b"hello"),
        Err(CertificateError::NotPem)
    );
    let key_pem = key.serialize_pem();
    assert_eq!(
        CertificateIdentity::from_pem(key_pem.as_bytes()),
        Err(CertificateError::NotPem)
    );
    assert!(matches!(
        CertificateIdentity::from_der(b"\x30\x03\x02\x01\x01"),
        Err(CertificateError::NotX509(_))
    ));
}

#[test]
fn serials_are_canonical_base_10() {
    assert_eq!(canonical_serial("00123").as_deref(), Some("123"));
    assert_eq!(canonical_serial("000").as_deref(), Some("0"));
    assert_eq!(
        canonical_serial("340282366920938463463374607431768211455").as_deref(),
        Some("340282366920938463463374607431768211455")
    );
    for bad in ["", "-1", "0x1f", "1 2", "１２"] {
        assert_eq!(canonical_serial(bad), None, "{bad:?}");
    }
}

#[test]
fn certificate_wire_layout() {
    let req = ClientCertificateValidationRequest {
        correlation_id: "c".into(),
        timestamp: 0,
        timeout: 0,
        issuer: "i".into(),
        serial_number: "7".into(),
    };
    let expected = [0x02, b'c', 0x00, 0x00, 0x02, b'i', 0x02, b'7'];
    assert_eq!(round_trip(&req), expected);
    assert_rejects_truncation_and_trailing::<ClientCertificateValidationRequest>(&expected);

    let resp = ClientCertificateValidationResponse {
        correlation_id: "c".into(),
        timestamp: 0,
        timeout: 0,
        credential_id: None,
        client_id: Some("x".into()),
        status_code: 1,
        reason_phrase: Some("r".into()),
    };
    let expected = [
        0x02, b'c', 0x00, 0x00, 0x02, 0x00, 0x02, b'x', 0x02, 0x02, 0x02, b'r',
    ];
    assert_eq!(round_trip(&resp), expected);
    assert_rejects_truncation_and_trailing::<ClientCertificateValidationResponse>(&expected);
}

#[test]
fn revocation_events_wire_layout() {
    let ev = EndpointTokenRevokedEvent {
        correlation_id: "c".into(),
        timestamp: 0,
        timeout: 0,
        app_name: "a".into(),
        endpoint_id: "e".into(),
        token_ids: vec!["x".into(), "y".into()],
        originator_replica_id: "r".into(),
    };
    // array = block count 2 (zig-zag 4), items, end-of-array block 0.
    let expected = [
        0x02, b'c', 0x00, 0x00, 0x02, b'a', 0x02, b'e', 0x04, 0x02, b'x', 0x02, b'y', 0x00, 0x02, b'r',
    ];
    assert_eq!(round_trip(&ev), expected);
    assert_rejects_truncation_and_trailing::<EndpointTokenRevokedEvent>(&expected);

    let ev = ClientCredentialRevokedEvent {
        correlation_id: "c".into(),
        timestamp: 0,
        timeout: 0,
        credential_id: "k".into(),
        originator_replica_id: "r".into(),
    };
    let expected = [0x02, b'c', 0x00, 0x00, 0x02, b'k', 0x02, b'r'];
    assert_eq!(round_trip(&ev), expected);
    assert_rejects_truncation_and_trailing::<ClientCredentialRevokedEvent>(&expected);
}
