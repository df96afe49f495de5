//! The in-memory view of CM's Secrets that every validation reads: lookups by token hash, token
//! id, endpoint, username and certificate, and the revocations implied by each change. Pure: the
//! watch task feeds it, nothing here talks to the API server.
//!
//! A value that two Secrets claim (the same token hash, username or certificate, which CM itself
//! never writes but `kubectl` or a second writer could) identifies nothing: lookups answer "unknown"
//! rather than pick one, and a warning names the Secrets.

use std::collections::{BTreeSet, HashMap};

use kaa_store::{ClientCredential, CredentialKind, CredentialStatus, EndpointToken, PasswordCredential};

use super::layout::{CredentialEntry, EndpointEntry, Parsed};
use crate::cm::storage::Revocation;

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

    // --- lookups ---------------------------------------------------------------------------

    /// The token with this hash, unless no or several tokens have it.
    pub fn token_by_hash(&self, hash: &str) -> Option<EndpointToken> {
        let reference = self.by_hash.unique(&hash.to_owned())?;
        let (name, id) = reference.rsplit_once('/')?;
        Some(self.endpoints.get(name)?.tokens.get(id)?.token.clone())
    }

    /// Whether any token has this hash (even ambiguously): issuing it again is a conflict.
    pub fn hash_taken(&self, hash: &str) -> bool {
        self.by_hash.claimed(&hash.to_owned())
    }

    /// The Secret holding token `id`.
    pub fn token_secret(&self, id: &str) -> Option<&str> {
        self.by_token_id.unique(&id.to_owned())
    }

    pub fn token(&self, id: &str) -> Option<EndpointToken> {
        let name = self.token_secret(id)?;
        Some(self.endpoints.get(name)?.tokens.get(id)?.token.clone())
    }

    /// An endpoint's tokens, oldest first.
    pub fn endpoint_tokens(&self, endpoint_id: &str) -> Vec<EndpointToken> {
        let mut tokens: Vec<EndpointToken> = self
            .by_endpoint
            .get(endpoint_id)
            .and_then(|name| self.endpoints.get(name))
            .map(|e| e.tokens.values().map(|t| t.token.clone()).collect())
            .unwrap_or_default();
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        tokens
    }

    pub fn credential(&self, id: &str) -> Option<ClientCredential> {
        let name = self.by_credential_id.get(id)?;
        Some(self.credentials.get(name)?.credential.clone())
    }

    /// Credentials (of one client id, when given), oldest first, and how many there are.
    pub fn credentials(
        &self,
        client_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> (Vec<ClientCredential>, u64) {
        let mut all: Vec<&ClientCredential> = self
            .credentials
            .values()
            .map(|e| &e.credential)
            .filter(|c| client_id.is_none_or(|id| c.client_id == id))
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let total = u64::try_from(all.len()).unwrap_or(u64::MAX);
        let page = all
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect();
        (page, total)
    }

    pub fn password_credential(&self, username: &str) -> Option<PasswordCredential> {
        let name = self.by_username.unique(&username.to_owned())?;
        let entry = self.credentials.get(name)?;
        Some(PasswordCredential {
            credential: entry.credential.clone(),
            password_hash: entry.password_hash.clone()?,
        })
    }

    /// Whether a password credential has this username (even ambiguously).
    pub fn username_taken(&self, username: &str) -> bool {
        self.by_username.claimed(&username.to_owned())
    }

    pub fn certificate_credential(&self, issuer: &str, serial: &str) -> Option<ClientCredential> {
        let name = self
            .by_certificate
            .unique(&(issuer.to_owned(), serial.to_owned()))?;
        Some(self.credentials.get(name)?.credential.clone())
    }

    pub fn certificate_taken(&self, issuer: &str, serial: &str) -> bool {
        self.by_certificate
            .claimed(&(issuer.to_owned(), serial.to_owned()))
    }
}

/// The tokens of one endpoint that stop identifying it between `old` and `new`: gone (deleted with
/// the Secret or its entry, or no longer readable), turned unusable, or changed in value or
/// application. One event per application (an endpoint's tokens normally share one).
fn token_revocations(old: Option<&EndpointEntry>, new: Option<&EndpointEntry>) -> Vec<Revocation> {
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
fn credential_revocation(old: Option<&CredentialEntry>, new: Option<&CredentialEntry>) -> Option<Revocation> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kaa_store::{TokenStatus, token_hash};

    use super::*;
    use crate::cm::kubernetes::layout::StoredToken;

    fn token(id: &str, value: &str, status: TokenStatus) -> (String, StoredToken) {
        (
            id.to_owned(),
            StoredToken {
                token: EndpointToken {
                    id: id.into(),
                    endpoint_id: "ep".into(),
                    app_name: "meter".into(),
                    app_version: "meter-v1".into(),
                    status,
                    created_at: 1,
                },
                hash: token_hash(value),
            },
        )
    }

    fn endpoint(tokens: &[(String, StoredToken)]) -> Parsed {
        Parsed::Endpoint(EndpointEntry {
            endpoint_id: "ep".into(),
            tokens: tokens.iter().cloned().collect::<BTreeMap<_, _>>(),
        })
    }

    fn password(id: &str, username: &str, hash: &str, status: CredentialStatus) -> Parsed {
        Parsed::Credential(CredentialEntry {
            credential: ClientCredential {
                id: id.into(),
                client_id: "gw".into(),
                kind: CredentialKind::Password {
                    username: username.into(),
                },
                status,
                created_at: 1,
            },
            password_hash: Some(hash.into()),
        })
    }

    fn revoked_tokens(r: &[Revocation]) -> Vec<String> {
        r.iter()
            .flat_map(|r| match r {
                Revocation::Tokens { token_ids, .. } => token_ids.clone(),
                Revocation::Credential { .. } => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn token_changes_revoke_exactly_what_stops_working() {
        let mut index = Index::default();
        let a = token("a", "va", TokenStatus::Active);
        let b = token("b", "vb", TokenStatus::Inactive);
        let (r, w) = index.apply("s", "1", endpoint(&[a.clone(), b.clone()]));
        assert!(r.is_empty() && w.is_empty());
        assert_eq!(index.token_by_hash(&token_hash("va")).unwrap().id, "a");
        assert_eq!(index.token("b").unwrap().status, TokenStatus::Inactive);
        assert_eq!(index.endpoint_tokens("ep").len(), 2);

        // Activation is not a revocation; suspension is.
        let b_active = token("b", "vb", TokenStatus::Active);
        let (r, _) = index.apply("s", "2", endpoint(&[a.clone(), b_active.clone()]));
        assert!(r.is_empty(), "{r:?}");
        let a_suspended = token("a", "va", TokenStatus::Suspended);
        let (r, _) = index.apply("s", "3", endpoint(&[a_suspended.clone(), b_active.clone()]));
        assert_eq!(
            r,
            [Revocation::Tokens {
                app_name: "meter".into(),
                endpoint_id: "ep".into(),
                token_ids: vec!["a".into()]
            }]
        );
        // Suspended -> Revoked: already refused, nothing new to announce.
        let (r, _) = index.apply(
            "s",
            "4",
            endpoint(&[token("a", "va", TokenStatus::Revoked), b_active.clone()]),
        );
        assert!(r.is_empty(), "{r:?}");
        // A changed value revokes the old one.
        let (r, _) = index.apply("s", "5", endpoint(&[token("b", "other", TokenStatus::Active)]));
        assert_eq!(revoked_tokens(&r), ["a", "b"], "a removed, b changed value");
        assert!(index.token_by_hash(&token_hash("vb")).is_none());
        assert!(index.token("a").is_none());

        // Deleting the Secret revokes everything in it.
        let r = index.delete("s", Some("6"));
        assert_eq!(revoked_tokens(&r), ["b"]);
        assert!(index.endpoint_tokens("ep").is_empty());
        assert!(index.delete("s", Some("7")).is_empty(), "nothing left to revoke");
    }

    #[test]
    fn duplicate_values_identify_nothing() {
        let mut index = Index::default();
        index.apply("s1", "1", endpoint(&[token("a", "same", TokenStatus::Active)]));
        let (_, w) = index.apply(
            "s2",
            "2",
            Parsed::Endpoint(EndpointEntry {
                endpoint_id: "ep2".into(),
                tokens: [token("b", "same", TokenStatus::Active)].into_iter().collect(),
            }),
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(index.token_by_hash(&token_hash("same")).is_none());
        assert!(index.hash_taken(&token_hash("same")));
        index.delete("s2", Some("3"));
        assert_eq!(index.token_by_hash(&token_hash("same")).unwrap().id, "a");

        index.apply("c1", "4", password("c1", "alice", "h", CredentialStatus::Active));
        let (_, w) = index.apply("c2", "5", password("c2", "alice", "h", CredentialStatus::Active));
        assert_eq!(w.len(), 1);
        assert!(index.password_credential("alice").is_none());
        assert!(index.username_taken("alice"));
    }

    #[test]
    fn credential_changes() {
        let mut index = Index::default();
        index.apply("c", "1", password("c", "alice", "h1", CredentialStatus::Active));
        assert_eq!(index.password_credential("alice").unwrap().password_hash, "h1");
        assert_eq!(index.credential("c").unwrap().client_id, "gw");
        let (r, _) = index.apply("c", "2", password("c", "alice", "h1", CredentialStatus::Active));
        assert!(r.is_empty(), "no change");
        let (r, _) = index.apply("c", "3", password("c", "alice", "h2", CredentialStatus::Active));
        assert_eq!(
            r,
            [Revocation::Credential {
                credential_id: "c".into()
            }],
            "new password"
        );
        let (r, _) = index.apply("c", "4", password("c", "alice", "h2", CredentialStatus::Revoked));
        assert_eq!(r.len(), 1, "revoked");
        let (r, _) = index.apply("c", "5", Parsed::Ignored);
        assert_eq!(r.len(), 1, "unreadable now: announced again, harmless");
        assert!(index.credential("c").is_none());
        assert!(!index.username_taken("alice"));
    }

    #[test]
    fn relists_revoke_what_disappeared() {
        let mut index = Index::default();
        index.apply("s", "1", endpoint(&[token("a", "va", TokenStatus::Active)]));
        index.apply("c", "2", password("c", "alice", "h", CredentialStatus::Active));
        let (r, _) = index.replace_all(vec![(
            "c".into(),
            "2".into(),
            password("c", "alice", "h", CredentialStatus::Active),
        )]);
        assert_eq!(revoked_tokens(&r), ["a"]);
        assert_eq!(r.len(), 1, "the unchanged credential stays");
        assert!(index.token("a").is_none());
        assert!(index.credential("c").is_some());
    }

    #[test]
    fn writers_wait_for_their_revision() {
        let mut index = Index::default();
        assert!(!index.has_seen("s", "5"));
        index.apply("other", "6", Parsed::Ignored);
        assert!(
            index.has_seen("s", "5"),
            "a later change elsewhere means ours was delivered"
        );
        assert!(!index.has_seen("s", "7"));
        index.apply("s", "7", Parsed::Ignored);
        assert!(index.has_seen("s", "7"));
        assert!(!index.has_seen_deletion("s", "7"));
        index.delete("s", Some("8"));
        assert!(index.has_seen_deletion("s", "7"));
        index.apply("s", "9", Parsed::Ignored);
        assert!(index.has_seen_deletion("s", "7"), "re-created since");
        // Opaque versions: only an exact match counts.
        assert!(!index.has_seen("x", "abc"));
        index.apply("x", "abc", Parsed::Ignored);
        assert!(index.has_seen("x", "abc"));
    }

    #[test]
    fn credential_pages() {
        let mut index = Index::default();
        for (i, name) in ["c1", "c2", "c3"].iter().enumerate() {
            let Parsed::Credential(mut entry) = password(name, name, "h", CredentialStatus::Active) else {
                unreachable!()
            };
            entry.credential.created_at = i64::try_from(i).unwrap();
            if *name == "c2" {
                entry.credential.client_id = "other".into();
            }
            index.apply(name, "1", Parsed::Credential(entry));
        }
        let (page, total) = index.credentials(None, 1, 1);
        assert_eq!((page[0].id.as_str(), total), ("c2", 3));
        let (page, total) = index.credentials(Some("gw"), 0, 10);
        assert_eq!(
            page.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["c1", "c3"]
        );
        assert_eq!(total, 2);
    }
}
