//! Portcullis: a self-hosted authentication service. gRPC first (tonic), with the JSON/HTTP
//! shim of two published auth APIs on the same listener.
//!
//! # Layout
//! - [`settings`]: command line, environment and TOML settings.
//! - [`app`]: assembly of everything below into one listener; graceful shutdown; health;
//!   request ids and deadlines.
//! - [`observe`]: the request log line and security events; [`metrics`]: Prometheus;
//!   [`traces`]: OpenTelemetry over OTLP.
//! - [`probes`]: readiness for gRPC health, `/healthz` and `/readyz`, and draining.
//! - [`tls`]: TLS and mTLS on the listener, reloaded on SIGHUP or file change.
//! - [`server`]: the accept loop, with the limits slow clients meet (header deadline,
//!   connection cap) and the graceful drain.
//! - [`grpc`]: the `portcullis.v1` services (authentication, verification, recovery, logs,
//!   passwords, admin) and Envoy's ext_authz. Thin: decode, call [`service`], encode.
//! - [`http`]: the JSON shim (`/api/...` passwordless, `/project/{id}/auth/...` password),
//!   the hosted pages (magic link, password reset), forward auth for proxies, OIDC
//!   discovery and introspection, CORS, JWKS, `/openapi.json`. Equally thin; its two
//!   error shapes live in `http::errors`.
//! - [`service`]: the operations both transports call (login by code or link, names,
//!   anonymous users, recovery, events and logs, password accounts, sessions, projects and
//!   their settings). Every rule of authentication lives here or in [`domain`].
//! - [`domain`]: parsed names (email, E.164 phone), password rules and hashing, secret
//!   tokens and their hashes, login codes, client addresses, the clock. Plain Rust,
//!   unit-tested without I/O.
//! - [`jwt`]: Ed25519 session JWTs, the JWKS, projects' external tokens.
//! - [`store`]: the only module that speaks SQL (SQLite and PostgreSQL, one code path),
//!   with the hot-path session cache and cross-replica revocations.
//! - [`delivery`]: the outbox worker that sends mails (SMTP or `.eml` files) and texts
//!   (SMS webhook or files).
//! - [`error`]: the one error type, its mapping to gRPC status codes and HTTP statuses.

pub mod app;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod http;
pub mod jwt;
pub mod metrics;
pub mod observe;
pub mod probes;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;
pub mod tls;
pub mod traces;

pub use app::Application;
pub use settings::Settings;
