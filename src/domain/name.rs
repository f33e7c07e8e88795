//! The names people log in with: an email address or a phone number. Parsing normalizes
//! them (lower-case email, E.164 phone) so one person maps to one user.

use std::fmt;

/// Why a name was refused; the message is shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub &'static str);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// RFC 5321 caps a path at 254 characters.
    pub const MAX_LEN: usize = 254;

    pub fn parse(input: &str) -> Result<Email, NameError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(NameError("is empty"));
        }
        if trimmed.len() > Self::MAX_LEN {
            return Err(NameError("is longer than 254 characters"));
        }
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or(NameError("is neither an email address nor a phone number"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(NameError("has an invalid part before the @"));
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok {
            return Err(NameError("has an invalid part before the @"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(NameError("has an invalid domain"));
        }
        Ok(Email(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form: `+` and 8 to 15 digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    pub fn parse(input: &str) -> Result<Phone, NameError> {
        let trimmed = input.trim();
        let rest = if let Some(rest) = trimmed.strip_prefix('+') {
            rest
        } else if let Some(rest) = trimmed.strip_prefix("00") {
            rest
        } else {
            return Err(NameError(
                "is a phone number without a country code (write it as +<country><number>)",
            ));
        };
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(NameError("is neither an email address nor a phone number")),
            }
        }
        if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(NameError("is not a valid international phone number"));
        }
        Ok(Phone(format!("+{digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a user logs in with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Name {
    Email(Email),
    Phone(Phone),
}

impl Name {
    /// Anything longer is refused before any parsing work.
    pub const MAX_LEN: usize = 320;

    pub fn parse(input: &str) -> Result<Name, NameError> {
        if input.len() > Self::MAX_LEN {
            return Err(NameError("is too long"));
        }
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(NameError("is empty"));
        }
        if trimmed.contains('@') {
            return Email::parse(trimmed).map(Name::Email);
        }
        if trimmed.starts_with('+') || trimmed.starts_with(|c: char| c.is_ascii_digit()) {
            return Phone::parse(trimmed).map(Name::Phone);
        }
        Err(NameError("is neither an email address nor a phone number"))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Name::Email(email) => email.as_str(),
            Name::Phone(phone) => phone.as_str(),
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        let name = Name::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(name, Name::Email(Email("ada.lovelace@example.com".into())));
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "@example.com",
            "ada@",
            "ada@example",
            "ada@@example.com",
            "a b@example.com",
            "ada@exa_mple.com",
            ".ada@example.com",
        ] {
            assert!(Name::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn phone_numbers_are_normalized_to_e164() {
        assert_eq!(
            Name::parse("+41 79 123-45-67").unwrap().as_str(),
            "+41791234567"
        );
        assert_eq!(
            Name::parse("0041 (79) 123 45 67").unwrap().as_str(),
            "+41791234567"
        );
    }

    #[test]
    fn phone_numbers_without_a_country_code_or_with_letters_are_refused() {
        assert!(Name::parse("079 123 45 67").is_err());
        assert!(Name::parse("+41 79 CALL ME").is_err());
        assert!(Name::parse("+123").is_err());
    }

    #[test]
    fn empty_oversized_and_other_names_are_refused() {
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse(&"a".repeat(10_000)).is_err());
        assert!(Name::parse("robert'); DROP TABLE users;--").is_err());
    }
}
