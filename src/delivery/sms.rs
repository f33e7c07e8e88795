//! The only code that talks to the SMS webhook: a POST of `{"recipient", "message"}` as
//! JSON, with an optional bearer secret.

use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SmsWebhook {
    pub url: String,
    pub secret: Option<SecretString>,
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a plain HTTP client builds")
}

pub(super) async fn send(
    client: &reqwest::Client,
    webhook: &SmsWebhook,
    recipient: &str,
    message: &str,
) -> Result<(), String> {
    let mut request = client
        .post(&webhook.url)
        .json(&serde_json::json!({ "recipient": recipient, "message": message }));
    if let Some(secret) = &webhook.secret {
        request = request.bearer_auth(secret.expose_secret());
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("SMS webhook: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("SMS webhook answered {}", response.status()))
    }
}
