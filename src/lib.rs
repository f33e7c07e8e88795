//! Portcullis: a self-hosted authentication service. gRPC first (tonic), with plain HTTP
//! routes on the same listener.
//!
//! # Layout
//! - [`settings`]: command line, environment and TOML settings.
//! - [`app`]: assembly of everything below into one listener; graceful shutdown; health.
//! - [`grpc`], [`http`]: the transports (HTTP: JWKS, hosted reset-password page). Thin:
//!   decode, call [`service`], encode.
//! - [`service`]: the operations both transports call (login by code, password accounts,
//!   sessions, projects). Every rule of authentication lives here or in [`domain`].
//! - [`domain`]: parsed names (email, E.164 phone), password rules and hashing, secret
//!   tokens and their hashes, login codes, the clock. Plain Rust, unit-tested without I/O.
//! - [`jwt`]: Ed25519 JWT signing and verification, the JWKS.
//! - [`store`]: the only module that speaks SQL (SQLite and PostgreSQL, one code path).
//! - [`delivery`]: the outbox worker that sends mails (SMTP or `.eml` files) and texts.
//! - [`error`]: the one error type and its mapping to gRPC status codes.

pub mod app;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod http;
pub mod jwt;
pub mod service;
pub mod settings;
pub mod store;

pub use app::Application;
pub use settings::Settings;
