//! Golden tests: the example messages of the RFC READMEs (4/ESP has literal examples;
//! 9/ELCE, 13/DSTP, 14/TSTP, 16/ECAP and 19/EPMMP have none, so their examples are built from
//! the values the RFCs describe), encoded with our records and checked three ways:
//! 1. decode(encode(x)) == x;
//! 2. apache-avro's generic `Value` decoder (a code path independent of serde) reads the
//!    bytes against the checked-in schema and sees the RFC field names and values;
//! 3. for ClientData, the exact bytes, assembled by hand from the Avro specification.

mod collection;
mod never_panics;

use std::collections::BTreeMap;

use apache_avro::{reader::datum::GenericDatumReader, types::Value};
use kaa_protocol::{
    avro::AvroRecord,
    ecap::{
        ClientCertificateValidationRequest, ClientCertificateValidationResponse,
        ClientCredentialRevokedEvent, ClientUsernamePasswordValidationRequest,
        ClientUsernamePasswordValidationResponse, EndpointTokenRevokedEvent,
        EndpointTokenStatusTransitionRequest, EndpointTokenStatusTransitionResponse,
        EndpointTokenValidationRequest, EndpointTokenValidationResponse,
    },
    elce::{ConnectedEvent, DisconnectedEvent, RegisteredEvent, UnregisteredEvent},
    epmmp::{
        EndpointMetadataGetRequest, EndpointMetadataGetResponse, EndpointMetadataKeysGetRequest,
        EndpointMetadataKeysGetResponse, EndpointMetadataPatchRequest, EndpointMetadataPatchResponse,
    },
    esp::{ClientData, ExtensionData},
};

const CORRELATION_ID: &str = "07d78e95-2c4d-4899-957c-b9e5a3701fbb";
const TIMESTAMP: i64 = 1_490_262_793_349;
const TIMEOUT: i64 = 3_600_000;
const APP_VERSION: &str = "humidity-sensor-v3";
const ENDPOINT_ID: &str = "7ad263ec-3347-4c7d-af89-50c67061367a";

/// Encodes, decodes, compares; then returns the record as seen by the generic decoder.
fn check<T: AvroRecord + PartialEq + std::fmt::Debug>(value: &T) -> (Vec<u8>, BTreeMap<String, Value>) {
    let bytes = value.to_avro();
    assert_eq!(&T::from_avro(&bytes).expect("our own bytes decode"), value);
    let schema = apache_avro::Schema::parse_str(T::SCHEMA_JSON).expect("schema parses");
    let reader = GenericDatumReader::builder(&schema)
        .build()
        .expect("schema resolves");
    let mut rest = bytes.as_slice();
    let Value::Record(fields) = reader
        .read_value(&mut rest)
        .expect("generic decoder reads our bytes")
    else {
        panic!("not a record");
    };
    assert!(rest.is_empty(), "generic decoder left {} bytes", rest.len());
    (bytes, fields.into_iter().collect())
}

fn string(s: &str) -> Value {
    Value::String(s.into())
}

fn some(index: u32, v: Value) -> Value {
    Value::Union(index, Box::new(v))
}

// --- 4/ESP README examples ---------------------------------------------------------------

fn readme_client_data() -> ClientData {
    ClientData {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: TIMEOUT,
        app_version_name: APP_VERSION.into(),
        endpoint_id: Some(ENDPOINT_ID.into()),
        resource_path: "/json".into(),
        request_id: Some(42),
        // The README's base64 payload, decoded.
        payload: b"[\r\n  { \"humidity\": 88 }\r\n]".to_vec(),
        // The README example predates `configName`; its default is null.
        config_name: None,
    }
}

/// Avro zig-zag varint.
fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn len_prefixed(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as i64);
    out.extend_from_slice(b);
}

#[test]
fn esp_client_data_readme_example_exact_bytes() {
    let cd = readme_client_data();
    let mut expected = Vec::new();
    len_prefixed(&mut expected, CORRELATION_ID.as_bytes());
    varint(&mut expected, TIMESTAMP);
    varint(&mut expected, TIMEOUT);
    len_prefixed(&mut expected, APP_VERSION.as_bytes());
    varint(&mut expected, 0); // endpointId: branch 0 = string
    len_prefixed(&mut expected, ENDPOINT_ID.as_bytes());
    len_prefixed(&mut expected, b"/json");
    varint(&mut expected, 0); // requestId: branch 0 = int
    varint(&mut expected, 42);
    len_prefixed(&mut expected, &cd.payload);
    varint(&mut expected, 0); // configName: branch 0 = null
    assert_eq!(cd.to_avro(), expected);
    assert_eq!(ClientData::from_avro(&expected).unwrap(), cd);
    // Spot-check the varints against literal bytes: 3600000 -> zig-zag 7200000 -> 0x80 0xba 0xb7 0x03.
    assert_eq!(&expected[43..47], &[0x80, 0xba, 0xb7, 0x03]);
}

#[test]
fn esp_client_data_readme_example_generic_view() {
    let (_, f) = check(&readme_client_data());
    assert_eq!(f["correlationId"], string(CORRELATION_ID));
    assert_eq!(f["timestamp"], Value::Long(TIMESTAMP));
    assert_eq!(f["timeout"], Value::Long(TIMEOUT));
    assert_eq!(f["appVersionName"], string(APP_VERSION));
    assert_eq!(f["endpointId"], some(0, string(ENDPOINT_ID)));
    assert_eq!(f["resourcePath"], string("/json"));
    assert_eq!(f["requestId"], some(0, Value::Int(42)));
    assert_eq!(
        f["payload"],
        Value::Bytes(b"[\r\n  { \"humidity\": 88 }\r\n]".to_vec())
    );
    assert_eq!(f["configName"], some(0, Value::Null));
}

#[test]
fn esp_extension_data_readme_example() {
    let ed = ExtensionData {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: TIMEOUT,
        app_version_name: Some(APP_VERSION.into()),
        extension_instance_name: Some("humidity-sensor-cmx-1".into()),
        endpoint_id: Some(ENDPOINT_ID.into()),
        resource_path: "/config/json".into(),
        request_id: Some(42),
        payload: Some(b"{\n  \"sampling\" : 200\n}".to_vec()),
        status_code: 200,
        reason_phrase: Some("OK".into()),
    };
    let (_, f) = check(&ed);
    assert_eq!(f["appVersionName"], some(0, string(APP_VERSION)));
    assert_eq!(
        f["extensionInstanceName"],
        some(0, string("humidity-sensor-cmx-1"))
    );
    assert_eq!(
        f["payload"],
        some(0, Value::Bytes(b"{\n  \"sampling\" : 200\n}".to_vec()))
    );
    assert_eq!(f["statusCode"], Value::Int(200));
    assert_eq!(f["reasonPhrase"], some(1, string("OK")));
}

// --- 9/ELCE --------------------------------------------------------------------------------

#[test]
fn elce_connected_and_disconnected() {
    let endpoints = BTreeMap::from([
        (ENDPOINT_ID.to_string(), APP_VERSION.to_string()),
        (
            "0e5c6b8a-41a1-4e1e-9d42-2f5d3c1b7a90".to_string(),
            "humidity-sensor-v2".to_string(),
        ),
    ]);
    let connected = ConnectedEvent {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 0,
        endpoints: endpoints.clone(),
        originator_replica_id: "kpc-6d4f8b9c7-x2v5q".into(),
    };
    let (_, f) = check(&connected);
    let Value::Map(map) = &f["endpoints"] else {
        panic!("endpoints is not a map")
    };
    assert_eq!(map.len(), 2);
    assert_eq!(map[ENDPOINT_ID], string(APP_VERSION));
    assert_eq!(f["originatorReplicaId"], string("kpc-6d4f8b9c7-x2v5q"));

    let disconnected = DisconnectedEvent {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP + 60_000,
        timeout: 0,
        endpoints,
        originator_replica_id: "kpc-6d4f8b9c7-x2v5q".into(),
    };
    // Same schema shape, so the same bytes apart from the timestamp.
    let (bytes, _) = check(&disconnected);
    assert_eq!(bytes.len(), connected.to_avro().len());
}

#[test]
fn elce_lifecycle() {
    let (_, f) = check(&RegisteredEvent {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 0,
        app_version_name: APP_VERSION.into(),
        endpoint_id: ENDPOINT_ID.into(),
        originator_replica_id: "epr-0".into(),
    });
    assert_eq!(f["appVersionName"], string(APP_VERSION));
    assert_eq!(f["endpointId"], string(ENDPOINT_ID));
    let (_, f) = check(&UnregisteredEvent {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 0,
        app_version_name: APP_VERSION.into(),
        endpoint_id: ENDPOINT_ID.into(),
        originator_replica_id: "epr-0".into(),
    });
    assert_eq!(f["endpointId"], string(ENDPOINT_ID));
    assert_eq!(f["originatorReplicaId"], string("epr-0"));
}

// --- 16/ECAP -------------------------------------------------------------------------------

#[test]
fn ecap_token_validation() {
    let (_, f) = check(&EndpointTokenValidationRequest {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 5_000,
        app_name: "humidity-sensor".into(),
        token: "JTjxCCatUZ".into(),
    });
    assert_eq!(f["appName"], string("humidity-sensor"));
    assert_eq!(f["token"], string("JTjxCCatUZ"));

    let (_, f) = check(&EndpointTokenValidationResponse {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP + 3,
        timeout: 0,
        token_id: Some("4a3c5e1f-token".into()),
        endpoint_id: Some(ENDPOINT_ID.into()),
        status_code: 200,
        reason_phrase: None,
    });
    assert_eq!(f["tokenId"], some(0, string("4a3c5e1f-token")));
    assert_eq!(f["endpointId"], some(0, string(ENDPOINT_ID)));
    assert_eq!(f["reasonPhrase"], some(0, Value::Null));

    let (_, f) = check(&EndpointTokenValidationResponse {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP + 3,
        timeout: 0,
        token_id: None,
        endpoint_id: None,
        status_code: 404,
        reason_phrase: Some("Token not found".into()),
    });
    assert_eq!(f["tokenId"], some(1, Value::Null));
    assert_eq!(f["reasonPhrase"], some(1, string("Token not found")));
}

#[test]
fn ecap_token_status_transition() {
    let (_, f) = check(&EndpointTokenStatusTransitionRequest {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 5_000,
        app_name: "humidity-sensor".into(),
        token: "JTjxCCatUZ".into(),
        target_status: "Suspended".into(),
    });
    assert_eq!(f["appName"], string("humidity-sensor"));
    assert_eq!(f["token"], string("JTjxCCatUZ"));
    assert_eq!(f["targetStatus"], string("Suspended"));

    let (_, f) = check(&EndpointTokenStatusTransitionResponse {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP + 3,
        timeout: 0,
        status_code: 409,
        reason_phrase: Some("token revoked".into()),
    });
    assert_eq!(f["statusCode"], Value::Int(409));
    assert_eq!(f["reasonPhrase"], some(1, string("token revoked")));
}

#[test]
fn ecap_client_username_password() {
    let (_, f) = check(&ClientUsernamePasswordValidationRequest {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 3_000,
        username: Some("meter-gw-1".into()),
        password: Some("correct horse battery staple".into()),
    });
    assert_eq!(f["username"], some(0, string("meter-gw-1")));
    assert_eq!(f["password"], some(0, string("correct horse battery staple")));

    let (_, f) = check(&ClientUsernamePasswordValidationRequest {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 3_000,
        username: None,
        password: None,
    });
    assert_eq!(f["username"], some(1, Value::Null));
    assert_eq!(f["password"], some(1, Value::Null));

    let (_, f) = check(&ClientUsernamePasswordValidationResponse {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP + 40,
        timeout: 0,
        credential_id: Some("5b0c2c43-cred".into()),
        client_id: Some("meter-gw-1".into()),
        status_code: 200,
        reason_phrase: None,
    });
    assert_eq!(f["credentialId"], some(0, string("5b0c2c43-cred")));
    assert_eq!(f["clientId"], some(0, string("meter-gw-1")));
    assert_eq!(f["reasonPhrase"], some(0, Value::Null));

    let (_, f) = check(&ClientUsernamePasswordValidationResponse {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP + 40,
        timeout: 0,
        credential_id: None,
        client_id: None,
        status_code: 401,
        reason_phrase: Some("bad username or password".into()),
    });
    assert_eq!(f["credentialId"], some(1, Value::Null));
    assert_eq!(f["clientId"], some(1, Value::Null));
    assert_eq!(f["statusCode"], Value::Int(401));
}

#[test]
fn ecap_client_certificate() {
    let (_, f) = check(&ClientCertificateValidationRequest {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 3_000,
        issuer: "CN=Devices CA, O=Example".into(),
        serial_number: "340282366920938463463374607431768211455".into(),
    });
    assert_eq!(f["issuer"], string("CN=Devices CA, O=Example"));
    assert_eq!(
        f["serialNumber"],
        string("340282366920938463463374607431768211455")
    );

    let (_, f) = check(&ClientCertificateValidationResponse {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP + 2,
        timeout: 0,
        credential_id: Some("9d1e-cred".into()),
        client_id: Some("meter-42".into()),
        status_code: 200,
        reason_phrase: Some("OK".into()),
    });
    assert_eq!(f["credentialId"], some(0, string("9d1e-cred")));
    assert_eq!(f["clientId"], some(0, string("meter-42")));
    assert_eq!(f["reasonPhrase"], some(1, string("OK")));
}

#[test]
fn ecap_revocation_events() {
    let (_, f) = check(&EndpointTokenRevokedEvent {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 0,
        app_name: "humidity-sensor".into(),
        endpoint_id: ENDPOINT_ID.into(),
        token_ids: vec!["4a3c5e1f-token".into(), "77b2-token".into()],
        originator_replica_id: "cm-0".into(),
    });
    assert_eq!(f["appName"], string("humidity-sensor"));
    assert_eq!(f["endpointId"], string(ENDPOINT_ID));
    assert_eq!(
        f["tokenIds"],
        Value::Array(vec![string("4a3c5e1f-token"), string("77b2-token")])
    );
    assert_eq!(f["originatorReplicaId"], string("cm-0"));

    let (_, f) = check(&ClientCredentialRevokedEvent {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 0,
        credential_id: "5b0c2c43-cred".into(),
        originator_replica_id: "cm-0".into(),
    });
    assert_eq!(f["credentialId"], string("5b0c2c43-cred"));
    assert_eq!(f["originatorReplicaId"], string("cm-0"));
}

// --- 19/EPMMP ------------------------------------------------------------------------------

#[test]
fn epmmp_get() {
    let (_, f) = check(&EndpointMetadataGetRequest {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 5_000,
        endpoint_id: ENDPOINT_ID.into(),
        include: vec!["name".into(), "location".into()],
        include_metadata: true,
    });
    assert_eq!(
        f["include"],
        Value::Array(vec![string("name"), string("location")])
    );
    assert_eq!(f["includeMetadata"], Value::Boolean(true));

    let metadata = br#"{"name":"Living room sensor","location":{"lat":50.45,"lon":30.52}}"#;
    let (_, f) = check(&EndpointMetadataGetResponse {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP + 2,
        timeout: 0,
        endpoint_id: ENDPOINT_ID.into(),
        e_tag: Some("7".into()),
        payload: Some(metadata.to_vec()),
        status_code: 200,
        reason_phrase: None,
        app_version_name: Some(APP_VERSION.into()),
    });
    assert_eq!(f["eTag"], some(1, string("7")));
    assert_eq!(f["payload"], some(1, Value::Bytes(metadata.to_vec())));
    assert_eq!(f["appVersionName"], some(1, string(APP_VERSION)));
}

#[test]
fn epmmp_patch() {
    let patch =
        br#"[{"op":"replace","path":"/name","value":"Kitchen sensor"},{"op":"remove","path":"/location"}]"#;
    let (_, f) = check(&EndpointMetadataPatchRequest {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 5_000,
        endpoint_id: ENDPOINT_ID.into(),
        if_match: Some("7".into()),
        patch: patch.to_vec(),
    });
    assert_eq!(f["ifMatch"], some(1, string("7")));
    assert_eq!(f["patch"], Value::Bytes(patch.to_vec()));

    let (_, f) = check(&EndpointMetadataPatchResponse {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP + 2,
        timeout: 0,
        endpoint_id: ENDPOINT_ID.into(),
        status_code: 412,
        reason_phrase: Some("Metadata version mismatch".into()),
    });
    assert_eq!(f["statusCode"], Value::Int(412));
}

#[test]
fn epmmp_keys_get() {
    let (_, f) = check(&EndpointMetadataKeysGetRequest {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP,
        timeout: 5_000,
        endpoint_id: ENDPOINT_ID.into(),
    });
    assert_eq!(f["endpointId"], string(ENDPOINT_ID));

    let (_, f) = check(&EndpointMetadataKeysGetResponse {
        correlation_id: CORRELATION_ID.into(),
        timestamp: TIMESTAMP + 2,
        timeout: 0,
        endpoint_id: ENDPOINT_ID.into(),
        keys: vec!["name".into(), "location".into()],
        status_code: 200,
        reason_phrase: None,
    });
    assert_eq!(f["keys"], Value::Array(vec![string("name"), string("location")]));
}
