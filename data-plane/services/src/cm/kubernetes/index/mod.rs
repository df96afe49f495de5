//! The in-memory view of CM's Secrets that every validation reads: lookups by token hash, token
//! id, endpoint, username and certificate, and the revocations implied by each change. Pure: the
//! watch task feeds it, nothing here talks to the API server.
//!
//! A value that two Secrets claim (the same token hash, username or certificate, which CM itself
//! never writes but `kubectl` or a second writer could) identifies nothing: lookups answer "unknown"
//! rather than pick one, and a warning names the Secrets.
//!
//! This module keeps the index up to date as Secrets change; `lookups` answers the validations,
//! `revocation` says what each change stops identifying.

use std::collections::{BTreeSet, HashMap};

use kaa_store::CredentialKind;

use super::layout::{CredentialEntry, EndpointEntry, Parsed};
use crate::cm::storage::Revocation;
use revocation::{credential_revocation, token_revocations};

mod lookups;
mod revocation;

#[cfg(test)]
mod tests;

/// Values that should be unique, each mapped to whoever claims it.
#[derive(Debug)]
struct Claims<K>(HashMap<K, BTreeSet<String>>);

impl<K: std::hash::Hash + Eq> Default for Claims<K> {
    fn default() -> Self {
        Claims(HashMap::new())
    }
}

impl<K: std::hash::Hash + Eq + Clone> Claims<K> {
    fn add(&mut self, key: K, owner: &str) -> bool {
        let owners = self.0.entry(key).or_default();
        owners.insert(owner.to_owned());
        owners.len() == 1
    }

    fn remove(&mut self, key: &K, owner: &str) {
        if let Some(owners) = self.0.get_mut(key) {
            owners.remove(owner);
            if owners.is_empty() {
                self.0.remove(key);
            }
        }
    }

    /// The one owner, if exactly one claims `key`.
    fn unique(&self, key: &K) -> Option<&str> {
        match self.0.get(key) {
            Some(owners) if owners.len() == 1 => owners.iter().next().map(String::as_str),
            _ => None,
        }
    }

    fn claimed(&self, key: &K) -> bool {
        self.0.contains_key(key)
    }
}

/// CM's Secrets by name, parsed, with lookups.
#[derive(Debug, Default)]
pub struct Index {
    endpoints: HashMap<String, EndpointEntry>,
    credentials: HashMap<String, CredentialEntry>,
    /// resourceVersion of every Secret seen (also those that did not parse), for writers waiting
    /// to read their own write.
    versions: HashMap<String, String>,
    /// Highest numeric resourceVersion applied: the watch delivers in order, so every change up to
    /// it has been seen.
    high_water: u64,
    /// token hash -> "<secret name>/<token id>"
    by_hash: Claims<String>,
    /// token id -> secret name
    by_token_id: Claims<String>,
    /// endpoint id -> secret name
    by_endpoint: HashMap<String, String>,
    /// credential id -> secret name
    by_credential_id: HashMap<String, String>,
    by_username: Claims<String>,
    by_certificate: Claims<(String, String)>,
}

fn token_ref(name: &str, token_id: &str) -> String {
    format!("{name}/{token_id}")
}

/// A resourceVersion as a number. The API says they are opaque, but they are etcd revisions in
/// every Kubernetes; where one is not a number, writers simply do not wait for it.
pub fn revision(resource_version: &str) -> Option<u64> {
    resource_version.parse().ok()
}

impl Index {
    /// Puts (or replaces) one Secret; returns the revocations the change implies and warnings for
    /// values now claimed twice.
    pub fn apply(
        &mut self,
        name: &str,
        resource_version: &str,
        parsed: Parsed,
    ) -> (Vec<Revocation>, Vec<String>) {
        self.see(name, Some(resource_version));
        let (old_endpoint, old_credential) = self.remove_entries(name);
        let mut warnings = Vec::new();
        let revocations = match parsed {
            Parsed::Endpoint(entry) => {
                let revocations = token_revocations(old_endpoint.as_ref(), Some(&entry));
                warnings.extend(self.insert_endpoint(name, entry));
                revocations
                    .into_iter()
                    .chain(
                        old_credential
                            .as_ref()
                            .and_then(|c| credential_revocation(Some(c), None)),
                    )
                    .collect()
            }
            Parsed::Credential(entry) => {
                let revocation = credential_revocation(old_credential.as_ref(), Some(&entry));
                warnings.extend(self.insert_credential(name, entry));
                token_revocations(old_endpoint.as_ref(), None)
                    .into_iter()
                    .chain(revocation)
                    .collect()
            }
            Parsed::Ignored => token_revocations(old_endpoint.as_ref(), None)
                .into_iter()
                .chain(credential_revocation(old_credential.as_ref(), None))
                .collect(),
        };
        (revocations, warnings)
    }

    /// Removes one Secret (deleted, or gone from the selector).
    pub fn delete(&mut self, name: &str, resource_version: Option<&str>) -> Vec<Revocation> {
        self.see(name, resource_version);
        self.versions.remove(name);
        let (old_endpoint, old_credential) = self.remove_entries(name);
        token_revocations(old_endpoint.as_ref(), None)
            .into_iter()
            .chain(credential_revocation(old_credential.as_ref(), None))
            .collect()
    }

    /// Replaces everything with a fresh list (the watch's initial list, or a re-list after it lost
    /// track); what disappeared meanwhile is revoked.
    pub fn replace_all(&mut self, secrets: Vec<(String, String, Parsed)>) -> (Vec<Revocation>, Vec<String>) {
        let listed: BTreeSet<&str> = secrets.iter().map(|(name, _, _)| name.as_str()).collect();
        let gone: Vec<String> = self
            .versions
            .keys()
            .filter(|name| !listed.contains(name.as_str()))
            .cloned()
            .collect();
        let mut revocations = Vec::new();
        let mut warnings = Vec::new();
        for name in gone {
            revocations.extend(self.delete(&name, None));
        }
        for (name, rv, parsed) in secrets {
            let (r, w) = self.apply(&name, &rv, parsed);
            revocations.extend(r);
            warnings.extend(w);
        }
        (revocations, warnings)
    }

    fn see(&mut self, name: &str, resource_version: Option<&str>) {
        if let Some(rv) = resource_version {
            self.versions.insert(name.to_owned(), rv.to_owned());
            if let Some(n) = revision(rv) {
                self.high_water = self.high_water.max(n);
            }
        }
    }

    fn remove_entries(&mut self, name: &str) -> (Option<EndpointEntry>, Option<CredentialEntry>) {
        let endpoint = self.endpoints.remove(name);
        if let Some(entry) = &endpoint {
            self.by_endpoint.remove(&entry.endpoint_id);
            for (id, token) in &entry.tokens {
                self.by_hash.remove(&token.hash, &token_ref(name, id));
                self.by_token_id.remove(id, name);
            }
        }
        let credential = self.credentials.remove(name);
        if let Some(entry) = &credential {
            self.by_credential_id.remove(&entry.credential.id);
            match &entry.credential.kind {
                CredentialKind::Password { username } => self.by_username.remove(username, name),
                CredentialKind::Certificate { issuer, serial } => self
                    .by_certificate
                    .remove(&(issuer.clone(), serial.clone()), name),
            }
        }
        (endpoint, credential)
    }

    fn insert_endpoint(&mut self, name: &str, entry: EndpointEntry) -> Vec<String> {
        let mut warnings = Vec::new();
        self.by_endpoint
            .insert(entry.endpoint_id.clone(), name.to_owned());
        for (id, token) in &entry.tokens {
            if !self.by_hash.add(token.hash.clone(), &token_ref(name, id)) {
                warnings.push(format!(
                    "token {id} of Secret {name} has the same value as another token; neither validates"
                ));
            }
            if !self.by_token_id.add(id.clone(), name) {
                warnings.push(format!("token id {id} appears in more than one Secret"));
            }
        }
        self.endpoints.insert(name.to_owned(), entry);
        warnings
    }

    fn insert_credential(&mut self, name: &str, entry: CredentialEntry) -> Vec<String> {
        let mut warnings = Vec::new();
        self.by_credential_id
            .insert(entry.credential.id.clone(), name.to_owned());
        let unique = match &entry.credential.kind {
            CredentialKind::Password { username } => self.by_username.add(username.clone(), name),
            CredentialKind::Certificate { issuer, serial } => {
                self.by_certificate.add((issuer.clone(), serial.clone()), name)
            }
        };
        if !unique {
            warnings.push(format!(
                "Secret {name} has the same username or certificate as another credential; neither authenticates"
            ));
        }
        self.credentials.insert(name.to_owned(), entry);
        warnings
    }

    // --- what writers wait for -------------------------------------------------------------

    /// Whether the watch has delivered the write that produced `resource_version` of `name` (or
    /// anything later).
    pub fn has_seen(&self, name: &str, resource_version: &str) -> bool {
        let Some(wanted) = revision(resource_version) else {
            return self.versions.get(name).is_some_and(|rv| rv == resource_version);
        };
        self.high_water >= wanted
            || self
                .versions
                .get(name)
                .and_then(|rv| revision(rv))
                .is_some_and(|n| n >= wanted)
    }

    /// Whether the deletion of `name` at `resource_version` has been seen (gone, or re-created
    /// since).
    pub fn has_seen_deletion(&self, name: &str, resource_version: &str) -> bool {
        match self.versions.get(name) {
            None => true,
            Some(rv) if rv == resource_version => false,
            Some(rv) => match (revision(rv), revision(resource_version)) {
                (Some(now), Some(deleted)) => now > deleted,
                _ => true,
            },
        }
    }
}
