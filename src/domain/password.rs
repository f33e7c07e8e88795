//! Passwords: the NIST SP 800-63B rules for new ones, and argon2id hashing and verifying
//! on blocking threads behind a concurrency bound, so the one CPU-heavy step of the
//! service never stalls the async runtime (and with it every token check).

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization;

/// Why a password was refused; the message is shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PasswordError(pub String);

/// Anything longer is refused before any normalization or hashing work.
const MAX_INPUT_BYTES: usize = 1024;

/// A password as presented to be checked (login, current password): any non-empty text of
/// sane size, since accounts imported from elsewhere may predate the rules for new ones.
/// Normalized to NFKC as SP 800-63B advises, so the same characters typed on two
/// keyboards are one password. `Debug` is redacted.
#[derive(Clone)]
pub struct Password {
    normalized: SecretString,
    /// The text as typed, kept only when NFKC changed it: hashes imported from systems
    /// that did not normalize were made from it.
    as_typed: Option<SecretString>,
}

impl Password {
    pub fn parse(input: &str) -> Result<Password, PasswordError> {
        if input.is_empty() {
            return Err(PasswordError("is required".into()));
        }
        if input.len() > MAX_INPUT_BYTES {
            return Err(PasswordError(format!(
                "is longer than {} characters",
                NewPassword::MAX_CHARS
            )));
        }
        let normalized: String = input.nfkc().collect();
        let as_typed = (normalized != input).then(|| SecretString::from(input));
        Ok(Password {
            normalized: SecretString::from(normalized),
            as_typed,
        })
    }

    fn candidates(&self) -> impl Iterator<Item = &SecretString> {
        std::iter::once(&self.normalized).chain(self.as_typed.as_ref())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A password someone chose for their account: 8 to 128 characters (SP 800-63B asks for
/// at least 8 and allowing at least 64), any characters, no composition rules, and not
/// guessable: very common passwords, keyboard walks, repeats, dates and variations of the
/// email or project name are refused, with the reason and a suggestion.
pub struct NewPassword(Password);

impl NewPassword {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    /// `hints` are words an attacker would try first for this account (its email, the
    /// project's name); a password made of them is refused.
    pub fn parse(input: &str, hints: &[&str]) -> Result<NewPassword, PasswordError> {
        let password = Password::parse(input)?;
        let text = password.normalized.expose_secret();
        let chars = text.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(PasswordError(format!(
                "must be at least {} characters long",
                Self::MIN_CHARS
            )));
        }
        if chars > Self::MAX_CHARS {
            return Err(PasswordError(format!(
                "is longer than {} characters",
                Self::MAX_CHARS
            )));
        }
        let estimate = zxcvbn::zxcvbn(text, hints);
        if (estimate.score() as u8) < MIN_SCORE {
            let mut message = String::from("is too easy to guess");
            if let Some(feedback) = estimate.feedback() {
                if let Some(warning) = feedback.warning() {
                    let warning = warning.to_string();
                    let mut chars = warning.trim_end_matches('.').chars();
                    if let Some(first) = chars.next() {
                        message.push_str(": ");
                        message.extend(first.to_lowercase());
                        message.push_str(chars.as_str());
                    }
                }
                let suggestions: Vec<String> = feedback
                    .suggestions()
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if !suggestions.is_empty() {
                    message.push_str(&format!(". {}", suggestions.join(" ")));
                } else {
                    message.push('.');
                }
            } else {
                message.push('.');
            }
            if !message.contains("words") {
                message.push_str(" A few unrelated words make a strong password.");
            }
            return Err(PasswordError(message));
        }
        if made_of_hints(text, hints) {
            return Err(PasswordError(
                "is too close to the email address or the project's name: choose words that \
                 have nothing to do with them"
                    .into(),
            ));
        }
        Ok(NewPassword(password))
    }

    /// [`NewPassword::parse`] on a blocking thread: the strength estimate takes a few
    /// milliseconds for long input (and longer once, to load its word lists).
    pub async fn parse_off_runtime(
        input: String,
        hints: Vec<String>,
    ) -> Result<NewPassword, PasswordError> {
        let input = SecretString::from(input);
        tokio::task::spawn_blocking(move || {
            let hints: Vec<&str> = hints.iter().map(String::as_str).collect();
            NewPassword::parse(input.expose_secret(), &hints)
        })
        .await
        .unwrap_or_else(|_| Err(PasswordError("could not be checked; retry".into())))
    }

    pub fn as_password(&self) -> &Password {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(..)")
    }
}

/// Whether the password is little more than the hints with digits and punctuation around
/// them ("Ada.Example2024!"), which zxcvbn alone may score as fair. SP 800-63B lists such
/// context-specific words with the passwords to refuse.
fn made_of_hints(password: &str, hints: &[&str]) -> bool {
    let mut rest = password.to_lowercase();
    let mut words: Vec<String> = hints
        .iter()
        .map(|hint| hint.to_lowercase())
        .filter(|hint| hint.chars().count() >= 3)
        .collect();
    words.sort_by_key(|word| std::cmp::Reverse(word.len()));
    let mut found = false;
    for word in &words {
        if rest.contains(word.as_str()) {
            found = true;
            rest = rest.replace(word.as_str(), "");
        }
    }
    found && rest.chars().filter(|c| c.is_alphabetic()).count() < 4
}

/// zxcvbn's score 2: more than 10^6 guesses (scores 0 and 1 are the top of breach lists
/// and their near variants). Online guessing is further capped by the failure limits.
const MIN_SCORE: u8 = 2;

/// The OWASP baseline for argon2id: 19 MiB, two passes, one lane.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Checked against when the account is unknown or has no password, so that costs the
/// same time as a wrong password. Made with the parameters above from a random password
/// nobody knows (a unit test keeps the two in step).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$pN41+QzJWijkinJJbzlNrg$sOGU+rImFD6Tz2uS5kW87MuHeGWmux/CjcTQdEmXwjI";

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Right password. `rehash`: the stored hash is older or weaker than today's
    /// argon2id parameters (bcrypt, argon2i, lower costs) and should be replaced.
    Match {
        rehash: bool,
    },
    Mismatch,
}

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    /// Every hashing slot stayed busy for too long: the caller should retry shortly.
    #[error("too many password checks are waiting")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Hashes and verifies passwords on tokio's blocking threads, at most `concurrency` at a
/// time. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    concurrency: usize,
    /// Checks waiting for a free slot, for the metrics.
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

/// One check waiting for a hashing slot, for as long as it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How long a password check may wait for a free slot before the caller is told to retry.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

impl PasswordHasher {
    pub fn new(concurrency: usize) -> PasswordHasher {
        PasswordHasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            concurrency: concurrency.max(1),
            waiting: Arc::default(),
        }
    }

    /// The default bound: all cores but one, so logins under load leave a core for the
    /// token checks and everything else.
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get().saturating_sub(1))
            .unwrap_or(1)
            .max(1)
    }

    /// A fresh argon2id hash in PHC form (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
    /// Takes any [`Password`]: new ones pass [`NewPassword::as_password`]; a login passes
    /// the presented one to upgrade an old hash.
    pub async fn hash(&self, password: &Password) -> Result<String, HashingError> {
        let secret = password.normalized.clone();
        self.run(move || hash_now(secret.expose_secret())).await
    }

    /// Checks `password` against a stored PHC hash (argon2 or bcrypt); without one,
    /// against a dummy hash, so unknown accounts cost the same time.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verdict, HashingError> {
        let password = password.clone();
        let stored = stored.map(str::to_owned);
        self.run(move || Ok(verify_now(&password, stored.as_deref())))
            .await
    }

    /// (hashes running, checks waiting for a slot).
    pub fn load(&self) -> (usize, usize) {
        let running = self.concurrency - self.permits.available_permits().min(self.concurrency);
        let waiting = self.waiting.load(std::sync::atomic::Ordering::Relaxed);
        (running, waiting)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashingError> + Send + 'static,
    ) -> Result<T, HashingError> {
        // A span for traces, from the wait for a slot to the end of the work.
        let _span = tracing::info_span!("password.hashing");
        let acquired = {
            // Counted while waiting, also when the caller gives up mid-wait.
            let _waiting = Waiting::new(&self.waiting);
            tokio::time::timeout(QUEUE_TIMEOUT, self.permits.clone().acquire_owned()).await
        };
        let permit = acquired
            .map_err(|_| HashingError::Busy)?
            .map_err(|_| HashingError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| HashingError::Failed(format!("hashing task failed: {e}")))?
    }
}

fn argon2id() -> Argon2<'static> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(password: &str) -> Result<String, HashingError> {
    let mut salt = [0u8; 16];
    super::random::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashingError::Failed(e.to_string()))?;
    argon2id()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashingError::Failed(e.to_string()))
}

fn verify_now(password: &Password, stored: Option<&str>) -> Verdict {
    let Some(stored) = stored else {
        let _ = verify_argon2(password, DUMMY_HASH);
        return Verdict::Mismatch;
    };
    if let Err(reason) = super::check_password_hash(stored) {
        // A stored hash costlier than the bounds is refused unchecked, so no row can hold
        // the hashing slots (or memory) hostage; nor is it faster than a wrong password.
        tracing::warn!(%reason, "a stored password hash is refused");
        let _ = verify_argon2(password, DUMMY_HASH);
        return Verdict::Mismatch;
    }
    if is_bcrypt(stored) {
        let matched = password
            .candidates()
            .any(|candidate| bcrypt::verify(candidate.expose_secret(), stored).unwrap_or(false));
        return if matched {
            Verdict::Match { rehash: true }
        } else {
            Verdict::Mismatch
        };
    }
    match verify_argon2(password, stored) {
        Some(true) => Verdict::Match {
            rehash: is_weaker_than_today(stored),
        },
        Some(false) => Verdict::Mismatch,
        None => {
            // An unreadable hash must not be faster to refuse than a wrong password.
            tracing::warn!("a stored password hash is in an unknown format");
            let _ = verify_argon2(password, DUMMY_HASH);
            Verdict::Mismatch
        }
    }
}

/// `None` when `stored` is not an argon2 PHC string.
fn verify_argon2(password: &Password, stored: &str) -> Option<bool> {
    let parsed = PasswordHash::new(stored).ok()?;
    Algorithm::new(parsed.algorithm.as_str()).ok()?;
    Some(password.candidates().any(|candidate| {
        // Verification takes the algorithm and costs from the stored hash.
        Argon2::default()
            .verify_password(candidate.expose_secret().as_bytes(), &parsed)
            .is_ok()
    }))
}

fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|prefix| stored.starts_with(prefix))
}

fn is_weaker_than_today(stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return true;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm.as_str() != "argon2id"
        || parsed.version != Some(Version::V0x13 as u32)
        || params.m_cost() < M_COST_KIB
        || params.t_cost() < T_COST
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(password: &str) -> Result<NewPassword, PasswordError> {
        NewPassword::parse(password, &["ada@example.com", "Acme"])
    }

    #[test]
    fn short_passwords_are_refused_with_the_minimum() {
        let error = new("Xq7#pL2").unwrap_err();
        assert_eq!(error.0, "must be at least 8 characters long");
        assert_eq!(Password::parse("").unwrap_err().0, "is required");
    }

    #[test]
    fn long_passphrases_of_any_characters_are_accepted_up_to_the_maximum() {
        let sixty_four = "correct horse battery staple, jumping over lazy dogs in Zürich ☂";
        assert!(sixty_four.chars().count() >= 64);
        assert!(new(sixty_four).is_ok());
        assert!(new(&"ab€dèfgh".repeat(16)).is_ok(), "128 characters");
        let error = new(&"ab€dèfgh".repeat(17)).unwrap_err();
        assert!(error.0.contains("longer than 128"), "{}", error.0);
        assert!(Password::parse(&"x".repeat(5000)).is_err());
    }

    #[test]
    fn no_composition_rules_apply() {
        assert!(new("purple monkey dishwasher").is_ok());
        assert!(new("vélo tandem cerise").is_ok());
    }

    #[test]
    fn common_and_predictable_passwords_are_refused_with_a_reason() {
        for weak in [
            "password",
            "password1234",
            "12345678",
            "qwertyuiop",
            "aaaaaaaaaaaa",
            "iloveyou",
            "ada@example.com",
            "acmeacme1",
        ] {
            let error = new(weak).expect_err(weak);
            assert!(
                error.0.starts_with("is too easy to guess"),
                "{weak}: {}",
                error.0
            );
        }
        let error = new("password1234").unwrap_err();
        assert!(error.0.contains("common password"), "{}", error.0);
    }

    #[test]
    fn the_email_and_project_name_with_decorations_are_refused() {
        let hints = [
            "eve@example.com",
            "Default project",
            "eve",
            "example",
            "Default",
            "project",
        ];
        for weak in [
            "Eve.Example2024",
            "eve@example",
            "defaultproject1",
            "example.com!!",
        ] {
            let error = NewPassword::parse(weak, &hints).expect_err(weak);
            assert!(
                error.0.starts_with("is too close to the email"),
                "{weak}: {}",
                error.0
            );
        }
        assert!(NewPassword::parse("evening lighthouse glow", &hints).is_ok());
    }

    #[test]
    fn passwords_are_normalized_so_equivalent_text_matches() {
        // "ﬁ" (one ligature character) and "fi" are the same password after NFKC.
        let typed = Password::parse("ﬁne tuned piano keys").unwrap();
        let plain = Password::parse("fine tuned piano keys").unwrap();
        assert_eq!(
            typed.normalized.expose_secret(),
            plain.normalized.expose_secret()
        );
    }

    #[test]
    fn debug_output_hides_passwords() {
        let password = new("purple monkey dishwasher").unwrap();
        assert!(!format!("{password:?}").contains("purple"));
        assert!(!format!("{:?}", password.as_password()).contains("purple"));
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let password = new("purple monkey dishwasher").unwrap();
        let hash = hash_now(password.0.normalized.expose_secret()).unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert_eq!(
            verify_now(password.as_password(), Some(&hash)),
            Verdict::Match { rehash: false }
        );
        let wrong = Password::parse("purple monkey dishwashe").unwrap();
        assert_eq!(verify_now(&wrong, Some(&hash)), Verdict::Mismatch);
        assert_eq!(verify_now(&wrong, None), Verdict::Mismatch);
        assert_eq!(verify_now(&wrong, Some("not a hash")), Verdict::Mismatch);
    }

    #[test]
    fn the_dummy_hash_has_todays_parameters() {
        assert!(!is_weaker_than_today(DUMMY_HASH));
        assert!(DUMMY_HASH.starts_with(&format!(
            "$argon2id$v=19$m={M_COST_KIB},t={T_COST},p={P_COST}$"
        )));
    }

    #[test]
    fn bcrypt_and_weaker_argon2_hashes_verify_and_ask_for_a_rehash() {
        let password = Password::parse("legacy password").unwrap();
        let bcrypt = bcrypt::hash("legacy password", 4).unwrap();
        assert_eq!(
            verify_now(&password, Some(&bcrypt)),
            Verdict::Match { rehash: true }
        );
        for prefix in ["$2a$", "$2y$"] {
            let variant = format!("{prefix}{}", &bcrypt[4..]);
            assert_eq!(
                verify_now(&password, Some(&variant)),
                Verdict::Match { rehash: true }
            );
        }
        let weak = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(4096, 1, 1, None).unwrap(),
        )
        .hash_password(
            b"legacy password",
            &SaltString::encode_b64(b"0123456789abcdef").unwrap(),
        )
        .unwrap()
        .to_string();
        assert_eq!(
            verify_now(&password, Some(&weak)),
            Verdict::Match { rehash: true }
        );
        let other = Password::parse("another password").unwrap();
        assert_eq!(verify_now(&other, Some(&bcrypt)), Verdict::Mismatch);
    }

    #[tokio::test]
    async fn the_hasher_works_off_the_runtime() {
        let hasher = PasswordHasher::new(1);
        let password = new("purple monkey dishwasher").unwrap();
        let hash = hasher.hash(password.as_password()).await.unwrap();
        let verdict = hasher
            .verify(password.as_password(), Some(&hash))
            .await
            .unwrap();
        assert_eq!(verdict, Verdict::Match { rehash: false });
    }
}
