//! The revocation diff: which tokens and credentials one change of a Secret stops identifying.

use kaa_store::CredentialStatus;

use crate::cm::{
    kubernetes::layout::{CredentialEntry, EndpointEntry},
    storage::Revocation,
};

/// The tokens of one endpoint that stop identifying it between `old` and `new`: gone (deleted with
/// the Secret or its entry, or no longer readable), turned unusable, or changed in value or
/// application. One event per application (an endpoint's tokens normally share one).
pub(super) fn token_revocations(old: Option<&EndpointEntry>, new: Option<&EndpointEntry>) -> Vec<Revocation> {
    let Some(old) = old else { return Vec::new() };
    let mut by_app: Vec<(String, Vec<String>)> = Vec::new();
    for (id, before) in &old.tokens {
        let after = new
            .filter(|n| n.endpoint_id == old.endpoint_id)
            .and_then(|n| n.tokens.get(id));
        let revoked = match after {
            None => true,
            Some(after) => {
                (before.token.status.is_usable() && !after.token.status.is_usable())
                    || after.hash != before.hash
                    || after.token.app_name != before.token.app_name
            }
        };
        if revoked {
            let app = &before.token.app_name;
            match by_app.iter_mut().find(|(a, _)| a == app) {
                Some((_, ids)) => ids.push(id.clone()),
                None => by_app.push((app.clone(), vec![id.clone()])),
            }
        }
    }
    by_app
        .into_iter()
        .map(|(app_name, token_ids)| Revocation::Tokens {
            app_name,
            endpoint_id: old.endpoint_id.clone(),
            token_ids,
        })
        .collect()
}

/// Whether a credential stops authenticating what it did: gone, revoked, or changed in who it is
/// (client id, username, certificate) or in its password (sessions opened with the old one end).
pub(super) fn credential_revocation(
    old: Option<&CredentialEntry>,
    new: Option<&CredentialEntry>,
) -> Option<Revocation> {
    let old = old?;
    let revoked = match new {
        None => true,
        Some(new) => {
            new.credential.id != old.credential.id
                || (old.credential.status == CredentialStatus::Active
                    && new.credential.status != CredentialStatus::Active)
                || new.credential.client_id != old.credential.client_id
                || new.credential.kind != old.credential.kind
                || new.password_hash != old.password_hash
        }
    };
    revoked.then(|| Revocation::Credential {
        credential_id: old.credential.id.clone(),
    })
}
