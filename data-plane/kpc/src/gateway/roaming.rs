//! Endpoints that reconnected through another replica of this KPC instance.
//!
//! A device that loses its connection may reach another replica before this one notices (the old
//! socket can linger until its keepalive expires). The other replica's 9/ELCE `connected` is the
//! signal: this replica forgets the endpoint in every session that announced it earlier, so that
//! no push goes to the stale connection and, above all, no `disconnected` is published later that
//! would override the newer `connected`. A session left acting for no endpoint is ended (MQTT 5:
//! DISCONNECT "session taken over"); a gateway session acting for other endpoints keeps serving
//! them. An event older than this replica's own announcement is a reconnect race the other way
//! round and changes nothing.

use kaa_protocol::elce::ConnectedEvent;

use super::{End, Gateway, State, unlist};

impl Gateway {
    /// Applies another replica's `connected` event. Returns how many sessions were ended.
    pub fn endpoints_connected_elsewhere(&self, event: &ConnectedEvent) -> usize {
        if event.originator_replica_id == self.replica_id {
            return 0;
        }
        let mut ended = 0;
        let mut state = self.state();
        let State {
            sessions, endpoints, ..
        } = &mut *state;
        for endpoint_id in event.endpoints.keys() {
            let holders = endpoints.get(endpoint_id).cloned().unwrap_or_default();
            for id in holders {
                let Some(session) = sessions.get_mut(&id) else {
                    continue;
                };
                if session
                    .announced
                    .get(endpoint_id)
                    .is_none_or(|&at| at > event.timestamp)
                {
                    continue;
                }
                session.announced.remove(endpoint_id);
                session.endpoint_tokens.remove(endpoint_id);
                session.tokens.retain(|_, i| &i.endpoint_id != endpoint_id);
                unlist(endpoints, endpoint_id, id);
                tracing::info!(
                    endpoint_id,
                    session = id,
                    replica = event.originator_replica_id,
                    "endpoint reconnected through another replica; dropped it here"
                );
                if session.endpoint_tokens.is_empty() {
                    session.end(End::TakenOver);
                    ended += 1;
                }
            }
        }
        ended
    }
}
