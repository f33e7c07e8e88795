//! High-entropy tokens handed to clients. Only their SHA-256 hash is ever stored, so a
//! database leak yields nothing a client could present; lookups go by hash, which also
//! makes the comparison independent of how much of a guess matches.
//!
//! Tokens written on a hot path (a login's code token and magic link) lead with the
//! millisecond they were made, and so does their stored hash: a new row's index entry
//! then goes to the end of the index, a page many commits share, not to a random page of
//! its own (one more page written to the log and copied back per token). The holder
//! learns when the token was made, which it knew.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::fmt;

/// What a token is for. The prefix lets the service (and secret scanners) tell kinds apart
/// without a lookup per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    App,
    Admin,
    User,
    Code,
    Link,
    Recovery,
    Reset,
    Verify,
    Operator,
}

impl TokenKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            TokenKind::App => "app_",
            TokenKind::Admin => "adm_",
            TokenKind::User => "usr_",
            TokenKind::Code => "code_",
            TokenKind::Link => "lnk_",
            TokenKind::Recovery => "rec_",
            TokenKind::Reset => "rst_",
            TokenKind::Verify => "vfy_",
            TokenKind::Operator => "opr_",
        }
    }

    /// The kind a presented token claims by its prefix.
    pub fn of(token: &str) -> Option<TokenKind> {
        [
            TokenKind::App,
            TokenKind::Admin,
            TokenKind::User,
            TokenKind::Code,
            TokenKind::Link,
            TokenKind::Recovery,
            TokenKind::Reset,
            TokenKind::Verify,
            TokenKind::Operator,
        ]
        .into_iter()
        .find(|kind| token.starts_with(kind.prefix()))
    }
}

/// A freshly generated token: 256 random bits, base64url, behind a kind prefix.
/// `Debug` is redacted so it cannot end up in logs.
pub struct SecretToken(String);

impl SecretToken {
    pub fn generate(kind: TokenKind) -> SecretToken {
        let mut bytes = [0u8; 32];
        crate::domain::random::fill(&mut bytes);
        SecretToken::with_body(kind, &bytes)
    }

    /// Like [`SecretToken::generate`], its 256 random bits led by the current millisecond
    /// (6 bytes, big-endian), which also leads its [`TokenHash`].
    pub fn generate_time_led(kind: TokenKind) -> SecretToken {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let mut bytes = [0u8; TIME_LED_BYTES];
        bytes[..TIME_BYTES].copy_from_slice(&millis.to_be_bytes()[8 - TIME_BYTES..]);
        crate::domain::random::fill(&mut bytes[TIME_BYTES..]);
        SecretToken::with_body(kind, &bytes)
    }

    /// A token's text: its kind's prefix and its body in base64url.
    pub(super) fn with_body(kind: TokenKind, body: &[u8]) -> SecretToken {
        SecretToken(format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(body)))
    }

    /// `bytes` random bytes in base64url, without a kind prefix: for identifiers that must
    /// not be guessable (event ids).
    pub fn generate_raw(bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        crate::domain::random::fill(&mut buf);
        URL_SAFE_NO_PAD.encode(buf)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

/// The time a time-led token leads with; `None` for any other shape (tokens made with
/// [`SecretToken::generate`] have 32 bytes, 43 characters, after their prefix).
fn time_of(token: &str) -> Option<[u8; TIME_BYTES]> {
    let (_, body) = token.split_once('_')?;
    if body.len() != TIME_LED_CHARS {
        return None;
    }
    let mut bytes = [0u8; TIME_LED_BYTES + 2];
    let decoded = URL_SAFE_NO_PAD.decode_slice(body, &mut bytes).ok()?;
    (decoded == TIME_LED_BYTES).then(|| bytes[..TIME_BYTES].try_into().expect("6 bytes"))
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(..)")
    }
}

/// Bytes of time that lead a time-led token.
const TIME_BYTES: usize = 6;
/// A time-led token's body: its time and 32 random bytes.
const TIME_LED_BYTES: usize = TIME_BYTES + 32;
/// Its length in base64url.
const TIME_LED_CHARS: usize = (TIME_LED_BYTES * 4).div_ceil(3);

/// SHA-256 of a presented token: the only form in which tokens are stored. A time-led
/// token's hash keeps its first 26 bytes behind the token's 6 bytes of time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let Some(time) = time_of(token) else {
            return TokenHash(digest);
        };
        let mut hash = [0u8; 32];
        hash[..TIME_BYTES].copy_from_slice(&time);
        hash[TIME_BYTES..].copy_from_slice(&digest[..32 - TIME_BYTES]);
        TokenHash(hash)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_carry_their_kind_and_differ() {
        let a = SecretToken::generate(TokenKind::User);
        let b = SecretToken::generate(TokenKind::User);
        assert_eq!(TokenKind::of(a.expose()), Some(TokenKind::User));
        assert_ne!(a.expose(), b.expose());
        // 32 random bytes in base64url: 43 characters of at least 6 bits each.
        assert_eq!(a.expose().len(), "usr_".len() + 43);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let token = SecretToken::generate(TokenKind::Admin);
        assert!(!format!("{token:?}").contains(token.expose()));
    }

    #[test]
    fn time_led_tokens_and_their_hashes_follow_the_clock() {
        let first = SecretToken::generate_time_led(TokenKind::Code);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = SecretToken::generate_time_led(TokenKind::Code);
        assert_eq!(TokenKind::of(first.expose()), Some(TokenKind::Code));
        assert_eq!(first.expose().len(), "code_".len() + 51);
        // Later tokens sort after earlier ones, in the index as in time.
        assert!(first.hash().0 < second.hash().0);
        // Stored and presented forms agree, and the hash still depends on every byte.
        assert_eq!(first.hash(), TokenHash::of(first.expose()));
        // One character of the random part changed (not the last: its low bits must
        // be zero in base64url without padding).
        let mut altered = first.expose().as_bytes().to_vec();
        let at = altered.len() - 10;
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_ne!(TokenHash::of(&altered), first.hash());
        assert_eq!(TokenHash::of(&altered).0[..6], first.hash().0[..6]);
    }

    #[test]
    fn tokens_of_other_shapes_hash_to_plain_sha256() {
        let plain = SecretToken::generate(TokenKind::Code);
        let digest: [u8; 32] = Sha256::digest(plain.expose().as_bytes()).into();
        assert_eq!(plain.hash().0, digest);
        // Right length but not base64url: no time, no panic.
        let odd = format!("code_{}", "!".repeat(51));
        let digest: [u8; 32] = Sha256::digest(odd.as_bytes()).into();
        assert_eq!(TokenHash::of(&odd).0, digest);
    }

    #[test]
    fn hashes_are_stable_and_distinct() {
        assert_eq!(TokenHash::of("x"), TokenHash::of("x"));
        assert_ne!(TokenHash::of("x"), TokenHash::of("y"));
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive,
/// RFC 6750); `None` for any other scheme or an empty token.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod bearer_tests {
    use super::bearer_token;

    #[test]
    fn bearer_values_give_their_token_and_nothing_else_does() {
        assert_eq!(bearer_token("Bearer usr_abc"), Some("usr_abc"));
        assert_eq!(bearer_token("bearer  usr_abc "), Some("usr_abc"));
        assert_eq!(bearer_token("BEARER usr_abc"), Some("usr_abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("usr_abc"), None);
    }
}
