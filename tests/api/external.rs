//! External (Auth0-style) tokens signed with the project's own key.

use crate::helpers::*;
use crate::on_both_backends;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis::grpc::pb::*;
use tonic::Code;

on_both_backends!(an_external_token_is_signed_with_the_projects_key_once_configured);

/// A fresh Ed25519 key pair as PEM (PKCS#8 private, SPKI public).
pub fn ed25519_pem() -> (String, String) {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut private = hex("302e020100300506032b657004220420");
    private.extend_from_slice(&seed);
    let mut public = hex("302a300506032b6570032100");
    public.extend_from_slice(signing.verifying_key().as_bytes());
    let pem = |label: &str, der: &[u8]| {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            STANDARD.encode(der)
        )
    };
    (pem("PRIVATE KEY", &private), pem("PUBLIC KEY", &public))
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

async fn an_external_token_is_signed_with_the_projects_key_once_configured(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.log_in("ext@example.com").await;
    let exchange = || {
        let mut client = app.authentication.clone();
        let request = bearer(user.token(), ExchangeTokenRequest {});
        async move { client.exchange_token(request).await }
    };

    let unconfigured = exchange().await.unwrap_err();
    assert_eq!(unconfigured.code(), Code::FailedPrecondition);

    let (private, public) = ed25519_pem();
    let project = app
        .update_settings(UpdateProjectSettingsRequest {
            external_token_issuer: Some("https://auth.acme.test/".into()),
            external_token_audience: Some("urn:acme:exchange".into()),
            external_token_key_pem: Some(private),
            ..Default::default()
        })
        .await;
    assert!(project.external_token_key_set);

    let token = exchange().await.expect("exchange").into_inner().token;
    let key = jsonwebtoken::DecodingKey::from_ed_pem(public.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&["https://auth.acme.test/"]);
    validation.set_audience(&["urn:acme:exchange"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)
        .expect("verifies")
        .claims;
    assert_eq!(claims["sub"], user.session.uid.as_str());
    assert_eq!(claims["name"], "ext@example.com");
    assert!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 300,
        "short-lived"
    );

    let stranger = app
        .authentication
        .clone()
        .exchange_token(bearer("usr_unknown", ExchangeTokenRequest {}))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::Unauthenticated);
}
