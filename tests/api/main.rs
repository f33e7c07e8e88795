//! The integration suite: one binary, a module per area. Each test starts the real server
//! on port 0 with its own database and talks to it with real clients.

mod cli;
mod health;
mod helpers;
mod login;
mod login_refusals;
mod password;
mod password_browser;
mod server;
mod smtp;
