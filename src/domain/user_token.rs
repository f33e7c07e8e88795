//! USER_TOKENs that prove themselves: 32 random bytes and a keyed tag over them, so a
//! forged or random token is refused in memory, at the cost of a cached hit, and a flood
//! of them never reaches the database. Tokens issued before tags (32 bytes, no tag) keep
//! working until the last of them has expired.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

use super::{SecretToken, TokenKind};

const RANDOM_BYTES: usize = 32;
const TAG_BYTES: usize = 10;

/// What the body of a presented USER_TOKEN says about it, before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserTokenForm {
    /// Tagged, and the tag is right: worth looking up.
    Tagged,
    /// Issued before tags: worth looking up while such tokens can still be alive.
    Legacy,
    /// A wrong tag, or no token's shape: refused without a lookup.
    Forged,
}

/// The key user tokens are tagged with (a server secret, the same on every replica), and
/// until when untagged tokens may still be alive.
pub struct UserTokenKey {
    /// Keyed and primed with the purpose once; cloned for each token.
    mac: Hmac<Sha256>,
    legacy_until: i64,
}

impl UserTokenKey {
    pub fn new(key: Vec<u8>, legacy_until: i64) -> UserTokenKey {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
        mac.update(b"portcullis user token");
        UserTokenKey { mac, legacy_until }
    }

    fn mac(&self, random: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(random);
        mac
    }

    fn tag(&self, random: &[u8]) -> [u8; TAG_BYTES] {
        let full = self.mac(random).finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// A new USER_TOKEN: `usr_` and the base64url of the random bytes and their tag.
    pub fn issue(&self) -> SecretToken {
        let mut body = [0u8; RANDOM_BYTES + TAG_BYTES];
        super::random::fill(&mut body[..RANDOM_BYTES]);
        let tag = self.tag(&body[..RANDOM_BYTES]);
        body[RANDOM_BYTES..].copy_from_slice(&tag);
        SecretToken::with_body(TokenKind::User, &body)
    }

    /// Judges a presented USER_TOKEN at time `now` without any lookup.
    pub fn form(&self, token: &str, now: i64) -> UserTokenForm {
        let Some(body) = token.strip_prefix(TokenKind::User.prefix()) else {
            return UserTokenForm::Forged;
        };
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(body) else {
            return UserTokenForm::Forged;
        };
        match bytes.len() {
            n if n == RANDOM_BYTES + TAG_BYTES => {
                let (random, tag) = bytes.split_at(RANDOM_BYTES);
                // Constant time: the tag is a secret's output.
                if self.mac(random).verify_truncated_left(tag).is_ok() {
                    UserTokenForm::Tagged
                } else {
                    UserTokenForm::Forged
                }
            }
            RANDOM_BYTES if now < self.legacy_until => UserTokenForm::Legacy,
            _ => UserTokenForm::Forged,
        }
    }
}

impl fmt::Debug for UserTokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTokenKey")
            .field("legacy_until", &self.legacy_until)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> UserTokenKey {
        UserTokenKey::new(vec![7; 32], 1_000)
    }

    #[test]
    fn issued_tokens_pass_and_any_change_is_a_forgery() {
        let key = key();
        let token = key.issue();
        assert_eq!(key.form(token.expose(), 5_000), UserTokenForm::Tagged);
        let mut bytes = token.expose().to_owned().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).unwrap();
        assert_eq!(key.form(&altered, 5_000), UserTokenForm::Forged);
        let other = UserTokenKey::new(vec![8; 32], 1_000);
        assert_eq!(
            other.form(token.expose(), 5_000),
            UserTokenForm::Forged,
            "another key"
        );
    }

    #[test]
    fn untagged_tokens_count_only_while_they_can_be_alive() {
        let key = key();
        let legacy = SecretToken::generate(TokenKind::User);
        assert_eq!(key.form(legacy.expose(), 999), UserTokenForm::Legacy);
        assert_eq!(key.form(legacy.expose(), 1_000), UserTokenForm::Forged);
        for junk in ["usr_", "usr_!!!!", "usr_abc", "app_whatever", ""] {
            assert_eq!(key.form(junk, 0), UserTokenForm::Forged, "{junk:?}");
        }
    }
}
