//! Recognizing password hashes brought in from other systems (user import): argon2 in
//! PHC form and bcrypt in its modular crypt form. Only the shape is checked here; the
//! password flow verifies them.

/// The longest imported hash accepted.
pub const MAX_IMPORTED_HASH_LEN: usize = 512;

/// The costliest hashes accepted, imported or stored. A hash's parameters set what one
/// check costs, so without a bound an admin's import (or a row written straight to the
/// database) is a cost bomb: t=2000 held the only hashing slot for 10 s, m=4 GiB would
/// exhaust memory. These bounds are several times the usual settings of other systems.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 64 * 1024;
pub const MAX_ARGON2_PASSES: u32 = 10;
pub const MAX_ARGON2_LANES: u32 = 4;
pub const MAX_BCRYPT_COST: u32 = 14;

/// Whether `hash` is an argon2 (PHC form) or bcrypt hash this service will check, and if
/// not, why not, in words an admin can act on.
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    const SHAPE: &str = "password_hash must be an argon2 ($argon2id$...) or bcrypt ($2b$...) hash";
    if hash.len() > MAX_IMPORTED_HASH_LEN || !hash.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SHAPE.into());
    }
    let parts: Vec<&str> = hash.split('$').collect();
    match parts.as_slice() {
        // $argon2id$v=19$m=19456,t=2,p=1$salt$hash
        ["", algorithm, version, params, salt, digest]
            if ["argon2id", "argon2i", "argon2d"].contains(algorithm)
                && version.starts_with("v=")
                && !salt.is_empty()
                && !digest.is_empty() =>
        {
            check_argon2_params(params)
        }
        // $2b$12$ + 22 characters of salt + 31 of hash
        ["", variant, cost, rest]
            if ["2a", "2b", "2y"].contains(variant)
                && cost.len() == 2
                && cost.bytes().all(|b| b.is_ascii_digit())
                && rest.len() == 53 =>
        {
            let cost: u32 = cost.parse().map_err(|_| SHAPE.to_owned())?;
            if cost > MAX_BCRYPT_COST {
                return Err(format!(
                    "bcrypt cost {cost} is above the limit of {MAX_BCRYPT_COST}"
                ));
            }
            Ok(())
        }
        _ => Err(SHAPE.into()),
    }
}

/// `m=19456,t=2,p=1`: each present once, within the bounds.
fn check_argon2_params(params: &str) -> Result<(), String> {
    let (mut memory, mut passes, mut lanes) = (None, None, None);
    for pair in params.split(',') {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("argon2 parameters {params:?} are not key=value pairs"))?;
        let slot = match key {
            "m" => &mut memory,
            "t" => &mut passes,
            "p" => &mut lanes,
            _ => continue,
        };
        let value: u32 = value
            .parse()
            .map_err(|_| format!("argon2 parameter {key}={value} is not a number"))?;
        *slot = Some(value);
    }
    let (Some(memory), Some(passes), Some(lanes)) = (memory, passes, lanes) else {
        return Err("argon2 parameters must give m, t and p".into());
    };
    if memory > MAX_ARGON2_MEMORY_KIB {
        return Err(format!(
            "argon2 memory m={memory} KiB is above the limit of {MAX_ARGON2_MEMORY_KIB} KiB (64 MiB)"
        ));
    }
    if passes > MAX_ARGON2_PASSES {
        return Err(format!(
            "argon2 passes t={passes} are above the limit of {MAX_ARGON2_PASSES}"
        ));
    }
    if lanes > MAX_ARGON2_LANES {
        return Err(format!(
            "argon2 lanes p={lanes} are above the limit of {MAX_ARGON2_LANES}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_and_bcrypt_hashes_are_recognized() {
        assert!(
            check_password_hash(
                "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"
            )
            .is_ok()
        );
        assert!(
            check_password_hash("$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW")
                .is_ok()
        );
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
            assert!(check_password_hash(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn costs_beyond_the_bounds_are_refused_with_the_reason() {
        let refused = [
            (
                "$argon2id$v=19$m=19456,t=2000,p=1$c29tZXNhbHQ$RdescudvJCsg",
                "t=2000",
            ),
            (
                "$argon2id$v=19$m=524288,t=2,p=1$c29tZXNhbHQ$RdescudvJCsg",
                "m=524288",
            ),
            (
                "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$RdescudvJCsg",
                "m=4294967295",
            ),
            (
                "$argon2id$v=19$m=4294967296,t=2,p=1$c29tZXNhbHQ$RdescudvJCsg",
                "not a number",
            ),
            (
                "$argon2id$v=19$m=19456,t=2,p=16$c29tZXNhbHQ$RdescudvJCsg",
                "p=16",
            ),
            (
                "$argon2id$v=19$m=19456$c29tZXNhbHQ$RdescudvJCsg",
                "must give m, t and p",
            ),
            (
                "$2b$31$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
                "cost 31",
            ),
            (
                "$2b$15$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
                "cost 15",
            ),
        ];
        for (hash, reason) in refused {
            let error = check_password_hash(hash).expect_err(hash);
            assert!(error.contains(reason), "{hash}: {error}");
        }
        for bound in [
            "$argon2id$v=19$m=65536,t=10,p=4$c29tZXNhbHQ$RdescudvJCsg",
            "$2b$14$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        ] {
            assert_eq!(check_password_hash(bound), Ok(()), "{bound}");
        }
    }
}
