//! The integration suite: one binary, a module per area. Each test starts the real server
//! on port 0 with its own database and talks to it with real clients.

mod account;
mod admin;
mod anonymous;
mod cancellation;
mod cli;
mod external;
mod first_start;
mod full_disk;
mod health;
mod helpers;
mod http_surface;
mod limits;
mod login;
mod login_refusals;
mod logs;
mod magic_link;
mod mesh;
mod metrics;
mod operator;
mod password;
mod password_browser;
mod probes;
mod recovery;
mod resilience;
mod schema;
mod secrets;
mod server;
mod shim;
mod shim_password;
mod smtp;
mod takeover;
mod tenants;
mod texts;
mod tls;
mod webhooks;
