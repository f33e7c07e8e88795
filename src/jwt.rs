//! JWTs issued beside sessions: Ed25519 (EdDSA) signatures, `kid` in the header, public
//! keys published as a JWKS. Keys are generated on first start and kept in the database
//! so every replica signs and verifies with the same set.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::domain::Clock;
use crate::store::{SigningKeyRecord, Store, StoreResult};

/// PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410): this prefix, then the 32 seed bytes.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Claims of a session JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The project id: the audience the token is meant for.
    pub aud: String,
    /// The user's uid.
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    /// The session this token was issued beside; revoking the session revokes the token.
    pub sid: String,
    /// Hasura's session variables, for projects that turn them on.
    #[serde(
        rename = "https://hasura.io/jwt/claims",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hasura: Option<HasuraClaims>,
}

/// The claim Hasura's JWT mode reads (values are strings, as Hasura requires).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HasuraClaims {
    #[serde(rename = "x-hasura-user-id")]
    pub user_id: String,
    #[serde(rename = "x-hasura-default-role")]
    pub default_role: String,
    #[serde(rename = "x-hasura-allowed-roles")]
    pub allowed_roles: Vec<String>,
    /// As the webhook's `X-Hasura-Is-Owner`: the project's root user.
    #[serde(rename = "x-hasura-is-owner")]
    pub is_owner: String,
}

impl HasuraClaims {
    pub fn for_user(uid: &str, root: bool) -> HasuraClaims {
        HasuraClaims {
            user_id: uid.to_owned(),
            default_role: "user".into(),
            allowed_roles: vec!["user".into()],
            is_owner: root.to_string(),
        }
    }
}

struct Key {
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_key: Vec<u8>,
    created_at: i64,
}

struct KeySet {
    keys: HashMap<String, Key>,
}

/// A new key is published (JWKS, cacheable for five minutes) this long before it signs
/// anything, so verifiers that cache the JWKS know it by then: rotation without downtime.
pub const KEY_PUBLISH_SECONDS: i64 = 600;

impl KeySet {
    /// The key new tokens are signed with at `now`: the newest key published for long
    /// enough, or, while none is (a first start), the oldest.
    fn active_kid(&self, now: i64) -> &str {
        let mut by_age: Vec<(&String, i64)> = self
            .keys
            .iter()
            .map(|(kid, key)| (kid, key.created_at))
            .collect();
        by_age.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        by_age
            .iter()
            .find(|(_, created)| *created <= now - KEY_PUBLISH_SECONDS)
            .or_else(|| by_age.last())
            .map(|(kid, _)| kid.as_str())
            .expect("a key set is never empty")
    }
}

#[derive(Clone)]
pub struct JwtKeys {
    store: Store,
    issuer: String,
    keys: Arc<RwLock<KeySet>>,
    last_reload: Arc<Mutex<Option<Instant>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("not a valid token")]
    Invalid,
    /// Signed with a kid this process does not know (yet: another replica may have
    /// rotated keys).
    #[error("unknown signing key")]
    UnknownKey,
    #[error("signing failed: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
}

impl JwtKeys {
    /// Loads the signing keys, generating the first one if there is none.
    pub async fn load_or_create(
        store: Store,
        clock: &Clock,
        issuer: String,
    ) -> StoreResult<JwtKeys> {
        let mut records = store.signing_keys().await?;
        if records.is_empty() {
            store.insert_signing_key(&generate_key(clock.now())).await?;
            records = store.signing_keys().await?;
        }
        let keys = Arc::new(RwLock::new(key_set(&records)));
        Ok(JwtKeys {
            store,
            issuer,
            keys,
            last_reload: Arc::default(),
        })
    }

    /// Re-reads the keys when a token names a kid another replica created; at most once
    /// per ten seconds, so garbage kids cannot turn into database load.
    pub async fn reload_if_stale(&self) -> StoreResult<()> {
        {
            let mut last = self.last_reload.lock().expect("reload lock poisoned");
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        self.reload().await
    }

    /// Re-reads the keys: new ones (rotation) are published, retired ones stop verifying.
    pub async fn reload(&self) -> StoreResult<()> {
        let records = self.store.signing_keys().await?;
        if records.is_empty() {
            return Ok(());
        }
        let fresh = key_set(&records);
        let retired = {
            let mut keys = self.keys.write().expect("key lock poisoned");
            let retired = keys.keys.keys().any(|kid| !fresh.keys.contains_key(kid));
            *keys = fresh;
            retired
        };
        if retired {
            // Tokens of a retired key may sit in the Authorize cache.
            self.store.forget_cached_sessions();
        }
        Ok(())
    }

    /// Generates a new signing key; it is published at once and signs from
    /// `KEY_PUBLISH_SECONDS` on. Returns its kid.
    pub async fn rotate(&self, now: i64) -> StoreResult<String> {
        let key = generate_key(now);
        self.store.insert_signing_key(&key).await?;
        self.reload().await?;
        Ok(key.kid)
    }

    /// Stops a key from verifying; false when no live key has this kid. Refused for the
    /// last live key, which would leave nothing to sign with. Retiring the key that signs
    /// now hands signing to another key at once.
    pub async fn retire(&self, kid: &str, now: i64) -> Result<bool, String> {
        {
            let keys = self.keys.read().expect("key lock poisoned");
            if keys.keys.len() == 1 && keys.keys.contains_key(kid) {
                return Err("this is the only signing key: rotate first, and retire it once the new key signs".into());
            }
        }
        let retired = self
            .store
            .retire_signing_key(kid, now)
            .await
            .map_err(|e| e.to_string())?;
        self.reload().await.map_err(|e| e.to_string())?;
        Ok(retired)
    }

    /// The live keys: kid, creation time, and whether each signs at `now`.
    pub fn describe(&self, now: i64) -> serde_json::Value {
        let keys = self.keys.read().expect("key lock poisoned");
        let active = keys.active_kid(now);
        let mut list: Vec<(&String, &Key)> = keys.keys.iter().collect();
        list.sort_by_key(|(_, key)| key.created_at);
        serde_json::Value::Array(
            list.into_iter()
                .map(|(kid, key)| {
                    serde_json::json!({ "kid": kid, "created_at": key.created_at, "signing": kid == active })
                })
                .collect(),
        )
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        let keys = self.keys.read().expect("key lock poisoned");
        let kid = keys.active_kid(claims.iat);
        let key = &keys.keys[kid];
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
    }

    /// Checks signature, issuer and algorithm. Expiry is left to the caller, which judges it
    /// against the service clock. `Err(Invalid)` also covers unknown kids.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Invalid)?;
        let kid = header.kid.ok_or(JwtError::Invalid)?;
        let keys = self.keys.read().expect("key lock poisoned");
        let key = keys.keys.get(&kid).ok_or(JwtError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| JwtError::Invalid)
    }

    /// The public keys as a JSON Web Key Set.
    pub fn jwks(&self) -> serde_json::Value {
        let keys = self.keys.read().expect("key lock poisoned");
        let mut kids: Vec<&String> = keys.keys.keys().collect();
        kids.sort();
        let jwks: Vec<serde_json::Value> = kids
            .into_iter()
            .map(|kid| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": "EdDSA",
                    "use": "sig",
                    "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(&keys.keys[kid].public_key),
                })
            })
            .collect();
        serde_json::json!({ "keys": jwks })
    }
}

/// A project's own key for external (Auth0-style) tokens, from PEM: Ed25519 (EdDSA),
/// P-256 (ES256) or RSA (RS256).
pub struct ExternalKey {
    key: EncodingKey,
    algorithm: Algorithm,
}

/// Claims of an external token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExternalClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ExternalKey {
    /// Parses a PEM private key, and proves it can sign.
    pub fn parse(pem: &str) -> Result<ExternalKey, String> {
        let bytes = pem.trim().as_bytes();
        let candidates = [
            (EncodingKey::from_ed_pem(bytes), Algorithm::EdDSA),
            (EncodingKey::from_ec_pem(bytes), Algorithm::ES256),
            (EncodingKey::from_rsa_pem(bytes), Algorithm::RS256),
        ];
        for (key, algorithm) in candidates {
            if let Ok(key) = key {
                let external = ExternalKey { key, algorithm };
                let probe = ExternalClaims {
                    iss: "probe".into(),
                    aud: "probe".into(),
                    sub: "probe".into(),
                    iat: 0,
                    exp: 1,
                    name: None,
                };
                if external.sign(&probe).is_ok() {
                    return Ok(external);
                }
            }
        }
        Err("is not a PEM private key of a supported kind (Ed25519, P-256 or RSA)".into())
    }

    pub fn sign(&self, claims: &ExternalClaims) -> Result<String, JwtError> {
        Ok(jsonwebtoken::encode(
            &Header::new(self.algorithm),
            claims,
            &self.key,
        )?)
    }
}

fn generate_key(now: i64) -> SigningKeyRecord {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).expect("the operating system's random source failed");
    let signing = SigningKey::from_bytes(&seed);
    let public_key = signing.verifying_key().to_bytes().to_vec();
    let mut kid_bytes = [0u8; 12];
    getrandom::getrandom(&mut kid_bytes).expect("the operating system's random source failed");
    SigningKeyRecord {
        kid: URL_SAFE_NO_PAD.encode(kid_bytes),
        private_key: seed.to_vec(),
        public_key,
        created_at: now,
    }
}

fn key_set(records: &[SigningKeyRecord]) -> KeySet {
    let keys = records
        .iter()
        .map(|record| {
            let mut der = ED25519_PKCS8_PREFIX.to_vec();
            der.extend_from_slice(&record.private_key);
            let key = Key {
                encoding: EncodingKey::from_ed_der(&der),
                decoding: DecodingKey::from_ed_der(&record.public_key),
                public_key: record.public_key.clone(),
                created_at: record.created_at,
            };
            (record.kid.clone(), key)
        })
        .collect();
    KeySet { keys }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_for(records: &[SigningKeyRecord]) -> KeySet {
        key_set(records)
    }

    #[test]
    fn a_signed_token_verifies_and_a_tampered_one_does_not() {
        let record = generate_key(0);
        let set = keys_for(std::slice::from_ref(&record));
        let key = &set.keys[&record.kid];
        let claims = Claims {
            iss: "https://auth.test".into(),
            aud: "p".into(),
            sub: "u".into(),
            iat: 1,
            exp: 2,
            sid: "s".into(),
            hasura: None,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(record.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_aud = false;
        assert!(jsonwebtoken::decode::<Claims>(&token, &key.decoding, &validation).is_ok());

        let other = generate_key(0);
        let other_set = keys_for(std::slice::from_ref(&other));
        assert!(
            jsonwebtoken::decode::<Claims>(
                &token,
                &other_set.keys[&other.kid].decoding,
                &validation
            )
            .is_err()
        );
    }

    #[test]
    fn a_new_key_signs_only_once_it_has_been_published_long_enough() {
        let old = generate_key(0);
        let new = generate_key(10_000);
        let set = keys_for(&[new.clone(), old.clone()]);
        assert_eq!(
            set.active_kid(10_000),
            old.kid,
            "just published: the old key still signs"
        );
        assert_eq!(set.active_kid(10_000 + KEY_PUBLISH_SECONDS - 1), old.kid);
        assert_eq!(set.active_kid(10_000 + KEY_PUBLISH_SECONDS), new.kid);

        let first = keys_for(std::slice::from_ref(&new));
        assert_eq!(
            first.active_kid(10_000),
            new.kid,
            "a lone key signs at once"
        );
    }
}
