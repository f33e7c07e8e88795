//! High-entropy tokens handed to clients. Only their SHA-256 hash is ever stored, so a
//! database leak yields nothing a client could present; lookups go by hash, which also
//! makes the comparison independent of how much of a guess matches.

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
        crate::domain::code::fill_random(&mut bytes);
        SecretToken(format!(
            "{}{}",
            kind.prefix(),
            URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// `bytes` random bytes in base64url, without a kind prefix: for identifiers that must
    /// not be guessable (event ids).
    pub fn generate_raw(bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        crate::domain::code::fill_random(&mut buf);
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// A token made elsewhere in the domain (user tokens carry a tag).
    pub(super) fn from_string(token: String) -> SecretToken {
        SecretToken(token)
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

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(..)")
    }
}

/// SHA-256 of a presented token: the only form in which tokens are stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
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
