//! Recognizing password hashes brought in from other systems (user import): argon2 in
//! PHC form and bcrypt in its modular crypt form. Only the shape is checked here; the
//! password flow verifies them.

/// The longest imported hash accepted.
pub const MAX_IMPORTED_HASH_LEN: usize = 512;

pub fn looks_like_password_hash(hash: &str) -> bool {
    if hash.len() > MAX_IMPORTED_HASH_LEN || !hash.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let parts: Vec<&str> = hash.split('$').collect();
    match parts.as_slice() {
        // $argon2id$v=19$m=19456,t=2,p=1$salt$hash
        ["", algorithm, version, params, salt, digest]
            if ["argon2id", "argon2i", "argon2d"].contains(algorithm) =>
        {
            version.starts_with("v=")
                && params.contains("m=")
                && !salt.is_empty()
                && !digest.is_empty()
        }
        // $2b$12$ + 22 characters of salt + 31 of hash
        ["", variant, cost, rest] if ["2a", "2b", "2y"].contains(variant) => {
            cost.len() == 2 && cost.bytes().all(|b| b.is_ascii_digit()) && rest.len() == 53
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_and_bcrypt_hashes_are_recognized() {
        assert!(looks_like_password_hash(
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"
        ));
        assert!(looks_like_password_hash(
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"
        ));
    }

    #[test]
    fn other_strings_are_not() {
        for bad in [
            "",
            "plaintext",
            "$1$salt$md5hash",
            "$2b$12$short",
            "$argon2id$v=19$m=1$s",
            "$2b$1x$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        ] {
            assert!(!looks_like_password_hash(bad), "{bad}");
        }
    }
}
