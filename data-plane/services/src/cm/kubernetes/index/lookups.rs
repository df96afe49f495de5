//! The lookups every validation makes: by token hash, token id, endpoint, credential id, username
//! and certificate. A value claimed twice answers "unknown" (see the module above).

use kaa_store::{ClientCredential, EndpointToken, PasswordCredential};

use super::Index;

impl Index {
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
