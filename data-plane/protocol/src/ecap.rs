//! 16/ECAP: endpoint token validation between the gateway (consumer) and the credential
//! provider.
//!
//! The gateway sends an [`EndpointTokenValidationRequest`] to
//! `kaa.v1.service.{provider}.ecap.ep-token-request` with a `replyTo`; the provider answers
//! with an [`EndpointTokenValidationResponse`]. A 2xx status accepts the token; the
//! returned `token_id` is what later revocation events name. Schemas: `schemas/0016/`.

use serde::{Deserialize, Serialize};

use crate::avro::avro_record;

/// NATS message type of [`EndpointTokenValidationRequest`].
pub const EP_TOKEN_REQUEST: &str = "ep-token-request";
/// NATS message type of [`EndpointTokenValidationResponse`].
pub const EP_TOKEN_RESPONSE: &str = "ep-token-response";

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
    }
}
