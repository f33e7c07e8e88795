//! Login codes: short numeric codes mailed or texted to a name. Stored only as an HMAC
//! keyed by a server secret and bound to the login request, so a stolen table does not
//! give codes away and the same digits in two requests hash differently.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

use super::TokenHash;

type HmacSha256 = Hmac<Sha256>;

/// A numeric code of 4 to 8 digits, uniformly random. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginCode(String);

impl LoginCode {
    pub const MIN_LENGTH: u32 = 4;
    pub const MAX_LENGTH: u32 = 8;

    pub fn generate(length: u32) -> LoginCode {
        let length = length.clamp(Self::MIN_LENGTH, Self::MAX_LENGTH);
        let modulus = 10u64.pow(length);
        // Rejection sampling keeps every code equally likely.
        let limit = u64::MAX - (u64::MAX % modulus);
        let value = loop {
            let mut bytes = [0u8; 8];
            super::random::fill(&mut bytes);
            let candidate = u64::from_le_bytes(bytes);
            if candidate < limit {
                break candidate % modulus;
            }
        };
        LoginCode(format!("{value:0width$}", width = length as usize))
    }

    /// Accepts what a person typed: digits only, surrounding spaces ignored.
    pub fn parse(input: &str) -> Option<LoginCode> {
        let trimmed = input.trim();
        let length = trimmed.len() as u32;
        let valid = (Self::MIN_LENGTH..=Self::MAX_LENGTH).contains(&length)
            && trimmed.bytes().all(|b| b.is_ascii_digit());
        valid.then(|| LoginCode(trimmed.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LoginCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginCode(..)")
    }
}

/// The server secret codes are keyed with.
#[derive(Clone)]
pub struct CodeKey(Vec<u8>);

impl CodeKey {
    pub fn new(secret: Vec<u8>) -> CodeKey {
        CodeKey(secret)
    }

    fn mac(&self, request: &TokenHash, code: &LoginCode) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(request.as_bytes());
        mac.update(code.expose().as_bytes());
        mac
    }

    pub fn seal(&self, request: &TokenHash, code: &LoginCode) -> Vec<u8> {
        self.mac(request, code).finalize().into_bytes().to_vec()
    }

    /// Constant-time comparison against a stored seal.
    pub fn matches(&self, request: &TokenHash, code: &LoginCode, sealed: &[u8]) -> bool {
        self.mac(request, code).verify_slice(sealed).is_ok()
    }
}

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_the_requested_number_of_digits() {
        for length in 4..=8 {
            let code = LoginCode::generate(length);
            assert_eq!(code.expose().len(), length as usize);
            assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn parse_refuses_letters_and_wrong_lengths() {
        assert!(LoginCode::parse(" 1234 ").is_some());
        assert!(LoginCode::parse("12a4").is_none());
        assert!(LoginCode::parse("123").is_none());
        assert!(LoginCode::parse("123456789").is_none());
        assert!(LoginCode::parse("１２３４").is_none());
    }

    #[test]
    fn a_seal_matches_only_its_code_and_request() {
        let key = CodeKey::new(b"secret".to_vec());
        let request = TokenHash::of("code_a");
        let code = LoginCode::parse("1234").unwrap();
        let sealed = key.seal(&request, &code);
        assert!(key.matches(&request, &code, &sealed));
        assert!(!key.matches(&request, &LoginCode::parse("1235").unwrap(), &sealed));
        assert!(!key.matches(&TokenHash::of("code_b"), &code, &sealed));
    }
}
