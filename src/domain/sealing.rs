//! Secrets at rest: values the service must read back (signing keys, the code HMAC key,
//! webhook secrets, external-token keys, undelivered messages) are sealed with the master
//! key, so a copy of the database alone opens nothing. XChaCha20-Poly1305 with a random
//! 24-byte nonce per value; the associated data names where the value lives (table,
//! column and row), so a sealed value moved to another row does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretBox};

/// Sealed bytes start with this; sealed text with [`TEXT_PREFIX`].
const BYTES_PREFIX: &[u8] = b"PCS1";
const TEXT_PREFIX: &str = "pcs1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The 32-byte master key. `Debug` never shows it.
pub struct MasterKey(SecretBox<[u8; 32]>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "a sealed value does not open with this master key (wrong key, or the value was altered or moved)"
    )]
    WrongKey,
    #[error("the master key must be 32 bytes, base64-encoded (head -c 32 /dev/urandom | base64)")]
    BadKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut key = [0u8; 32];
        super::random::fill(&mut key);
        MasterKey(SecretBox::new(Box::new(key)))
    }

    /// From its base64 form (surrounding whitespace ignored), as in a key file.
    pub fn from_base64(text: &str) -> Result<MasterKey, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .or_else(|_| STANDARD_NO_PAD.decode(text.trim()))
            .map_err(|_| SealError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(MasterKey(SecretBox::new(Box::new(key))))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.expose_secret())
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.expose_secret().into())
    }

    /// Seals `plain`, bound to `place` (e.g. `signing_keys.private_key:KID`).
    pub fn seal(&self, place: &str, plain: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::with_capacity(BYTES_PREFIX.len() + NONCE_LEN + plain.len() + TAG_LEN);
        sealed.extend_from_slice(BYTES_PREFIX);
        self.seal_onto(place, plain, &mut sealed);
        sealed
    }

    /// Appends the nonce, `plain` encrypted in place, and the tag to `out`: one buffer
    /// for the whole value (outbox mail is sealed on every code start).
    fn seal_onto(&self, place: &str, plain: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        super::random::fill(&mut nonce);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .cipher()
            .encrypt_in_place_detached(&XNonce::from(nonce), place.as_bytes(), &mut out[start..])
            .expect("XChaCha20-Poly1305 encryption does not fail");
        out.extend_from_slice(&tag);
    }

    pub fn open(&self, place: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let body = sealed
            .strip_prefix(BYTES_PREFIX)
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or(SealError::WrongKey)?;
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::WrongKey)?;
        self.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: place.as_bytes(),
                },
            )
            .map_err(|_| SealError::WrongKey)
    }

    pub fn seal_text(&self, place: &str, plain: &str) -> String {
        let mut sealed = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        self.seal_onto(place, plain.as_bytes(), &mut sealed);
        let mut text = String::with_capacity(TEXT_PREFIX.len() + sealed.len().div_ceil(3) * 4);
        text.push_str(TEXT_PREFIX);
        STANDARD_NO_PAD.encode_string(&sealed, &mut text);
        text
    }

    pub fn open_text(&self, place: &str, sealed: &str) -> Result<String, SealError> {
        let body = sealed
            .strip_prefix(TEXT_PREFIX)
            .and_then(|b| STANDARD_NO_PAD.decode(b).ok())
            .ok_or(SealError::WrongKey)?;
        let plain = self.open(place, &[BYTES_PREFIX, &body].concat())?;
        String::from_utf8(plain).map_err(|_| SealError::WrongKey)
    }
}

/// Whether a stored value is sealed (older versions stored them plain).
pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(BYTES_PREFIX)
}

pub fn is_sealed_text(value: &str) -> bool {
    value.starts_with(TEXT_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_place() {
        let key = MasterKey::generate();
        let sealed = key.seal("signing_keys.private_key:k1", b"secret key bytes");
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            key.open("signing_keys.private_key:k1", &sealed).unwrap(),
            b"secret key bytes"
        );
        assert_eq!(
            key.open("signing_keys.private_key:k2", &sealed),
            Err(SealError::WrongKey),
            "moved to another row"
        );
        assert_eq!(
            MasterKey::generate().open("signing_keys.private_key:k1", &sealed),
            Err(SealError::WrongKey)
        );
        let text = key.seal_text("projects.sms_webhook_secret:p", "hunter2");
        assert!(is_sealed_text(&text) && !text.contains("hunter2"));
        assert_eq!(
            key.open_text("projects.sms_webhook_secret:p", &text)
                .unwrap(),
            "hunter2"
        );
    }

    #[test]
    fn keys_round_trip_through_base64_and_bad_keys_are_refused() {
        let key = MasterKey::generate();
        let again = MasterKey::from_base64(&format!("{}\n", key.to_base64())).unwrap();
        let sealed = key.seal("x", b"y");
        assert_eq!(again.open("x", &sealed).unwrap(), b"y");
        assert_eq!(
            MasterKey::from_base64("c2hvcnQ=").unwrap_err(),
            SealError::BadKey
        );
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }
}
