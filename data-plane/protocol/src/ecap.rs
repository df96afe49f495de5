//! 16/ECAP: endpoint and client authentication between the gateway (consumer) and the
//! credential provider (kaa-rs: the `cm` service).
//!
//! Four targeted request/response pairs, each sent to
//! `kaa.v1.service.{provider}.ecap.{request type}` (see [`crate::subject::ecap_request`])
//! with a `replyTo`, answered there by the provider:
//!
//! | request type | request | response |
//! |---|---|---|
//! | [`EP_TOKEN_REQUEST`] | [`EndpointTokenValidationRequest`] | [`EndpointTokenValidationResponse`] |
//! | [`EP_TOKEN_STATUS_TRANSITION_REQUEST`] | [`EndpointTokenStatusTransitionRequest`] | [`EndpointTokenStatusTransitionResponse`] |
//! | [`CLIENT_USERNAME_PASSWORD_REQUEST`] | [`ClientUsernamePasswordValidationRequest`] | [`ClientUsernamePasswordValidationResponse`] |
//! | [`CLIENT_CERTIFICATE_REQUEST`] | [`ClientCertificateValidationRequest`] | [`ClientCertificateValidationResponse`] |
//!
//! A 2xx `statusCode` accepts; anything else rejects. The ids a provider returns
//! (`tokenId`, `credentialId`) are what its broadcast revocation events name later:
//! [`EndpointTokenRevokedEvent`] on [`crate::subject::ecap_token_revoked`] and
//! [`ClientCredentialRevokedEvent`] on [`crate::subject::ecap_credential_revoked`].
//! Schemas: `schemas/0016/`.
//!
//! Client certificates are named by issuer and serial number; [`CertificateIdentity`] derives
//! both from a certificate the one way gateway and provider must agree on.
//!
//! One kaa-rs addition that is **not** part of the RFC: [`EndpointTokenProvisionRequest`] /
//! [`EndpointTokenProvisionResponse`] on `kaa.v1.service.{cm}.ecap.ep-token-provision-request`,
//! JSON rather than Avro (no RFC schema exists for it), with which EPR stores the token a caller
//! chose when registering an endpoint.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::avro::avro_record;

/// NATS message type of [`EndpointTokenValidationRequest`].
pub const EP_TOKEN_REQUEST: &str = "ep-token-request";
/// NATS message type of [`EndpointTokenValidationResponse`].
pub const EP_TOKEN_RESPONSE: &str = "ep-token-response";
/// NATS message type of [`EndpointTokenProvisionRequest`] (kaa-rs, not in the RFC).
pub const EP_TOKEN_PROVISION_REQUEST: &str = "ep-token-provision-request";
/// NATS message type of [`EndpointTokenStatusTransitionRequest`].
pub const EP_TOKEN_STATUS_TRANSITION_REQUEST: &str = "ep-token-status-transition-request";
/// NATS message type of [`EndpointTokenStatusTransitionResponse`].
pub const EP_TOKEN_STATUS_TRANSITION_RESPONSE: &str = "ep-token-status-transition-response";
/// NATS message type of [`ClientUsernamePasswordValidationRequest`].
pub const CLIENT_USERNAME_PASSWORD_REQUEST: &str = "client-username-password-request";
/// NATS message type of [`ClientUsernamePasswordValidationResponse`].
pub const CLIENT_USERNAME_PASSWORD_RESPONSE: &str = "client-username-password-response";
/// NATS message type of [`ClientCertificateValidationRequest`].
pub const CLIENT_CERTIFICATE_REQUEST: &str = "client-certificate-request";
/// NATS message type of [`ClientCertificateValidationResponse`].
pub const CLIENT_CERTIFICATE_RESPONSE: &str = "client-certificate-response";

/// "Is this endpoint token valid for this application, and whose is it?"
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTokenValidationRequest {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    /// Application (not application version) the token is presented for.
    pub app_name: String,
    pub token: String,
}
avro_record!(
    EndpointTokenValidationRequest,
    "0016/0016-endpoint-token-validation-request.avsc"
);

/// The provider's verdict on a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTokenValidationResponse {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    /// `None` if the token is unknown.
    pub token_id: Option<String>,
    /// `None` if the token is unknown.
    pub endpoint_id: Option<String>,
    pub status_code: i32,
    pub reason_phrase: Option<String>,
}
avro_record!(
    EndpointTokenValidationResponse,
    "0016/0016-endpoint-token-validation-response.avsc"
);

/// "Move this endpoint token to `target_status`." The RFC leaves the values open; kaa-rs
/// uses the CM spellings `Active`, `Suspended`, `Revoked`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTokenStatusTransitionRequest {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub app_name: String,
    pub token: String,
    pub target_status: String,
}
avro_record!(
    EndpointTokenStatusTransitionRequest,
    "0016/0016-endpoint-token-status-transition-request.avsc"
);

/// The outcome of a token status transition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTokenStatusTransitionResponse {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub status_code: i32,
    pub reason_phrase: Option<String>,
}
avro_record!(
    EndpointTokenStatusTransitionResponse,
    "0016/0016-endpoint-token-status-transition-response.avsc"
);

/// "May a client with this MQTT username and password connect?"
///
/// `Debug` hides the password: these records pass through logs of whoever handles them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientUsernamePasswordValidationRequest {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}
avro_record!(
    ClientUsernamePasswordValidationRequest,
    "0016/0016-client-username-password-validation-request.avsc"
);

impl fmt::Debug for ClientUsernamePasswordValidationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientUsernamePasswordValidationRequest")
            .field("correlation_id", &self.correlation_id)
            .field("timestamp", &self.timestamp)
            .field("timeout", &self.timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The provider's verdict on a username/password pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientUsernamePasswordValidationResponse {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    /// `None` if the pair is not found.
    pub credential_id: Option<String>,
    /// `None` if the pair is not found (or the provider knows no client id).
    pub client_id: Option<String>,
    pub status_code: i32,
    pub reason_phrase: Option<String>,
}
avro_record!(
    ClientUsernamePasswordValidationResponse,
    "0016/0016-client-username-password-validation-response.avsc"
);

/// "Is the (already chain-verified) client certificate with this issuer and serial registered?"
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateValidationRequest {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    /// The certificate's issuer DN as an RFC 4514-style string.
    pub issuer: String,
    /// The certificate's serial number, base 10.
    pub serial_number: String,
}
avro_record!(
    ClientCertificateValidationRequest,
    "0016/0016-client-certificate-validation-request.avsc"
);

/// The provider's verdict on a client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateValidationResponse {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    /// `None` if the certificate is not registered.
    pub credential_id: Option<String>,
    /// `None` if the certificate is not registered (or the provider knows no client id).
    pub client_id: Option<String>,
    pub status_code: i32,
    pub reason_phrase: Option<String>,
}
avro_record!(
    ClientCertificateValidationResponse,
    "0016/0016-client-certificate-validation-response.avsc"
);

/// Broadcast: these tokens of one endpoint are no longer usable (suspended, revoked or
/// deleted); gateways drop them from their caches and cut the sessions using them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTokenRevokedEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub app_name: String,
    pub endpoint_id: String,
    /// Token ids (as returned in [`EndpointTokenValidationResponse::token_id`]), never values.
    pub token_ids: Vec<String>,
    pub originator_replica_id: String,
}
avro_record!(EndpointTokenRevokedEvent, "0016/0016-endpoint-token-revoked.avsc");

/// Broadcast: this client credential is no longer usable; gateways disconnect its sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCredentialRevokedEvent {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub credential_id: String,
    pub originator_replica_id: String,
}
avro_record!(
    ClientCredentialRevokedEvent,
    "0016/0016-client-credential-revoked.avsc"
);

/// kaa-rs, not in the RFC (JSON, not Avro): "store this endpoint token for this endpoint".
///
/// EPR sends it when `POST /epr/api/v1/endpoints` carries an `endpointToken`. The token is stored
/// `Inactive`, like one issued over the credential service's own REST API. `Debug` hides the token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointTokenProvisionRequest {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    pub endpoint_id: String,
    /// Application of `app_version` (what 16/ECAP validation requests name).
    pub app_name: String,
    pub app_version: String,
    pub token: String,
}

impl fmt::Debug for EndpointTokenProvisionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointTokenProvisionRequest")
            .field("correlation_id", &self.correlation_id)
            .field("timestamp", &self.timestamp)
            .field("timeout", &self.timeout)
            .field("endpoint_id", &self.endpoint_id)
            .field("app_name", &self.app_name)
            .field("app_version", &self.app_version)
            .field("token", &"***")
            .finish()
    }
}

/// kaa-rs, not in the RFC: the answer to an [`EndpointTokenProvisionRequest`]. `status_code` 201
/// = stored (with its `token_id`); 409 = the token is already in use; 400 = unusable request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointTokenProvisionResponse {
    pub correlation_id: String,
    pub timestamp: i64,
    pub timeout: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    pub status_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_phrase: Option<String>,
}

impl EndpointTokenProvisionRequest {
    pub fn to_json(&self) -> Vec<u8> {
        json_bytes(self)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl EndpointTokenProvisionResponse {
    pub fn to_json(&self) -> Vec<u8> {
        json_bytes(self)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Serializes a plain struct of strings and integers, which cannot fail.
fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// What a [`ClientCertificateValidationRequest`] says about a certificate: its issuer DN as an
/// RFC 4514-style string (x509-parser's rendering, e.g. `CN=Devices CA, O=Example`) and its serial
/// number in base 10. The gateway derives it from the certificate a client presented, the
/// credential service from the one uploaded, so both must use this one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIdentity {
    pub issuer: String,
    /// Base 10, no leading zeros (see [`canonical_serial`]).
    pub serial_number: String,
}

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("not a PEM certificate (expected a -----BEGIN CERTIFICATE----- block)")]
    NotPem,
    #[error("not a DER-encoded X.509 certificate: {0}")]
    NotX509(String),
    #[error("the certificate's issuer name cannot be rendered: {0}")]
    BadIssuer(String),
}

impl CertificateIdentity {
    /// From a DER-encoded X.509 certificate (what TLS hands over).
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| CertificateError::NotX509(e.to_string()))?;
        let issuer = cert
            .issuer()
            .to_string_with_registry(x509_parser::objects::oid_registry())
            .map_err(|e| CertificateError::BadIssuer(e.to_string()))?;
        Ok(CertificateIdentity {
            issuer,
            serial_number: cert.tbs_certificate.serial.to_str_radix(10),
        })
    }

    /// From the first `CERTIFICATE` block of a PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CertificateError> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| CertificateError::NotPem)?;
        if block.label != "CERTIFICATE" {
            return Err(CertificateError::NotPem);
        }
        Self::from_der(&block.contents)
    }
}

/// A base-10 serial number in canonical form (ASCII digits, no leading zeros, `"0"` for zero), or
/// `None` if `serial` is not a non-empty string of ASCII digits.
pub fn canonical_serial(serial: &str) -> Option<String> {
    if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = serial.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed }.to_owned())
}

#[cfg(test)]
mod tests {
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
        assert_schema_name::<ClientUsernamePasswordValidationRequest>(
            "ClientUsernamePasswordValidationRequest",
        );
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
}
