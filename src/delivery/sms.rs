//! The only code that talks to the SMS webhook: a POST of `{"recipient", "message"}` as
//! JSON, with an optional bearer secret. Project admins choose webhook URLs, so the
//! client refuses to become a way into the service's own network: internal addresses are
//! refused after DNS resolution (the connection goes to the vetted address, so a name
//! that resolves differently a second time gains nothing), redirects are not followed,
//! and only https is spoken. `--webhook-allow-private` lifts the first and last rules for
//! webhooks that really are on the local network.

use reqwest::dns::{Name, Resolve, Resolving};
use secrecy::{ExposeSecret, SecretString};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::domain::is_public_address;

#[derive(Clone)]
pub struct SmsWebhook {
    pub url: String,
    pub secret: Option<SecretString>,
}

impl std::fmt::Debug for SmsWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsWebhook")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Sends to webhooks, within the rules above.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookClient {
    pub fn new(allow_private: bool) -> WebhookClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself, past the check.
            .no_proxy()
            .dns_resolver(Arc::new(PublicOnly { allow_private }))
            .build()
            .expect("a plain HTTP client builds");
        WebhookClient {
            http,
            allow_private,
        }
    }

    pub(super) async fn send(
        &self,
        webhook: &SmsWebhook,
        recipient: &str,
        message: &str,
    ) -> Result<(), String> {
        check_webhook_url(&webhook.url, self.allow_private)?;
        let mut request = self
            .http
            .post(&webhook.url)
            .json(&serde_json::json!({ "recipient": recipient, "message": message }));
        if let Some(secret) = &webhook.secret {
            request = request.bearer_auth(secret.expose_secret());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("SMS webhook: {}", with_causes(&e)))?;
        if response.status().is_success() {
            Ok(())
        } else if response.status().is_redirection() {
            Err(format!(
                "SMS webhook answered {} (redirects are not followed)",
                response.status()
            ))
        } else {
            Err(format!("SMS webhook answered {}", response.status()))
        }
    }
}

/// An error and its causes, so the log says why (reqwest's own text stops at "error
/// sending request").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// What can be told from the URL alone: https (unless private targets are allowed), a
/// host, and no literal internal address. Names are checked when they are resolved.
pub fn check_webhook_url(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => {
            return Err("must use https (http only with --webhook-allow-private)".into());
        }
        other => return Err(format!("must use https, not {other}")),
    }
    let host = parsed.host_str().ok_or("has no host")?;
    // Literal addresses come normalized (decimal, octal and hex IPv4 forms included).
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    if let Some(ip) = literal
        && !allow_private
        && !is_public_address(ip)
    {
        return Err(format!(
            "points at an internal address ({ip}); allowed only with --webhook-allow-private"
        ));
    }
    Ok(())
}

/// Resolves names as the system does, keeping only public addresses (all of them when
/// private targets are allowed).
struct PublicOnly {
    allow_private: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| allow_private || is_public_address(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves only to internal addresses; allowed only with \
                     --webhook-allow-private"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_judged_before_any_connection() {
        for (url, allow, ok) in [
            ("https://sms.example.com/send", false, true),
            ("http://sms.example.com/send", false, false),
            ("http://sms.example.com/send", true, true),
            ("https://127.0.0.1/sms", false, false),
            ("https://[::1]/sms", false, false),
            ("https://169.254.169.254/latest", false, false),
            ("https://10.0.0.7/sms", true, true),
            ("ftp://sms.example.com", true, false),
            ("not a url", true, false),
            ("https://2130706433/sms", false, false),
            ("https://0x7f.1/sms", false, false),
        ] {
            assert_eq!(check_webhook_url(url, allow).is_ok(), ok, "{url} {allow}");
        }
    }
}
