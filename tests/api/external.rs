//! External (Auth0-style) tokens signed with the project's own key.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::*;
use tonic::Code;

on_both_backends!(an_external_token_is_signed_with_the_projects_key_once_configured);

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
