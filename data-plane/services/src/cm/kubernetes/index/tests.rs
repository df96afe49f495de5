use std::collections::BTreeMap;

use kaa_store::{TokenStatus, token_hash};

use kaa_store::{ClientCredential, CredentialStatus, EndpointToken};

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
