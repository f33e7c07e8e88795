//! Domain types and rules: parsed names, passwords, secrets, codes and the clock. Plain
//! Rust, no I/O (password hashing runs on blocking threads, still without I/O).

mod client;
mod clock;
mod code;
mod gate;
mod name;
mod network;
mod password;
mod password_hash;
pub(crate) mod random;
mod sealing;
mod secret;
mod user_token;

pub use client::{TrustedProxies, address_block};
pub use clock::Clock;
pub use code::{CodeKey, LoginCode};
pub use gate::{Pass, PresentedToken, Refusal, USER_HEADERS, cookie_value, is_cookie_name};
pub use name::{Email, Name, NameError, Phone};
pub use network::is_public_address;
pub use password::{HashingError, NewPassword, Password, PasswordError, PasswordHasher, Verdict};
pub use password_hash::check_password_hash;
pub use sealing::{MasterKey, SealError, is_sealed, is_sealed_text};
pub use secret::{SecretToken, TokenHash, TokenKind, bearer_token};
pub use user_token::{UserTokenForm, UserTokenKey};

/// The largest token or code any request may carry; longer input is refused before any
/// lookup so oversized values never reach the database.
pub const MAX_TOKEN_LEN: usize = 4096;
