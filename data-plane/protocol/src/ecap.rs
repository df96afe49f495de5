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
mod tests;
