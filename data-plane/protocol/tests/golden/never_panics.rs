//! No input panics a decoder: arbitrary bytes, and valid messages with one byte changed.

use kaa_protocol::{
    collection::{DataSamplesEvent, DataSamplesProcessed, TimeSeriesEvent, TimeSeriesProcessed},
    elce::AppVersionUpdatedEvent,
    scmp::{BroadcastConfigurationUpdateEvent, ConfigAppliedEvent, ServiceSpecificConfigurationUpdateEvent},
};
use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn decoding_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = ClientData::from_avro(&bytes);
        let _ = ExtensionData::from_avro(&bytes);
        let _ = ConnectedEvent::from_avro(&bytes);
        let _ = DisconnectedEvent::from_avro(&bytes);
        let _ = RegisteredEvent::from_avro(&bytes);
        let _ = UnregisteredEvent::from_avro(&bytes);
        let _ = EndpointTokenValidationRequest::from_avro(&bytes);
        let _ = EndpointTokenValidationResponse::from_avro(&bytes);
        let _ = EndpointTokenStatusTransitionRequest::from_avro(&bytes);
        let _ = EndpointTokenStatusTransitionResponse::from_avro(&bytes);
        let _ = ClientUsernamePasswordValidationRequest::from_avro(&bytes);
        let _ = ClientUsernamePasswordValidationResponse::from_avro(&bytes);
        let _ = ClientCertificateValidationRequest::from_avro(&bytes);
        let _ = ClientCertificateValidationResponse::from_avro(&bytes);
        let _ = EndpointTokenRevokedEvent::from_avro(&bytes);
        let _ = ClientCredentialRevokedEvent::from_avro(&bytes);
        let _ = EndpointMetadataGetRequest::from_avro(&bytes);
        let _ = EndpointMetadataGetResponse::from_avro(&bytes);
        let _ = EndpointMetadataPatchRequest::from_avro(&bytes);
        let _ = EndpointMetadataPatchResponse::from_avro(&bytes);
        let _ = EndpointMetadataKeysGetRequest::from_avro(&bytes);
        let _ = EndpointMetadataKeysGetResponse::from_avro(&bytes);
        let _ = DataSamplesEvent::from_avro(&bytes);
        let _ = DataSamplesProcessed::from_avro(&bytes);
        let _ = TimeSeriesEvent::from_avro(&bytes);
        let _ = TimeSeriesProcessed::from_avro(&bytes);
        let _ = AppVersionUpdatedEvent::from_avro(&bytes);
        let _ = BroadcastConfigurationUpdateEvent::from_avro(&bytes);
        let _ = ServiceSpecificConfigurationUpdateEvent::from_avro(&bytes);
        let _ = ConfigAppliedEvent::from_avro(&bytes);
    }

    #[test]
    fn decoding_mutated_valid_messages(pos in 0usize..200, byte in any::<u8>()) {
        let mut bytes = readme_client_data().to_avro();
        let pos = pos % bytes.len();
        bytes[pos] = byte;
        if let Ok(cd) = ClientData::from_avro(&bytes) {
            // Whatever decodes survives a round trip. Not byte for byte: Avro varints have
            // overlong forms (`0x80 0x00` is 0) that decoders accept and encoders never write.
            let again = cd.to_avro();
            prop_assert!(again.len() <= bytes.len());
            prop_assert_eq!(ClientData::from_avro(&again).unwrap(), cd);
        }
    }

    #[test]
    fn client_data_round_trips(
        correlation_id in ".{0,40}",
        timestamp in any::<i64>(),
        timeout in any::<i64>(),
        endpoint_id in prop::option::of(".{0,40}"),
        request_id in prop::option::of(any::<i32>()),
        payload in prop::collection::vec(any::<u8>(), 0..300),
        config_name in prop::option::of("[a-z]{0,10}"),
    ) {
        let cd = ClientData {
            correlation_id,
            timestamp,
            timeout,
            app_version_name: APP_VERSION.into(),
            endpoint_id,
            resource_path: "/json".into(),
            request_id,
            payload,
            config_name,
        };
        prop_assert_eq!(ClientData::from_avro(&cd.to_avro()).unwrap(), cd);
    }
}
