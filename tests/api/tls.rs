//! TLS on the one listener: gRPC and HTTP over TLS with ALPN, client certificates when
//! required, and a renewed certificate served without a restart.

use crate::helpers::*;
use rcgen::{
    BasicConstraints, Certificate as CaCertificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A test CA, a server certificate for localhost and 127.0.0.1, and a client certificate,
/// as PEM files in a folder.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    ca: CaCertificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Portcullis test CA");
        let ca = params.self_signed(&key).unwrap();
        let ca_pem = ca.pem();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        Pki {
            dir,
            ca_pem,
            ca,
            ca_key: key,
        }
    }

    /// Signs a certificate for `names`; returns (certificate PEM, key PEM).
    fn issue(&self, names: &[&str], client: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate and key where the service reads them.
    fn write_server(&self) -> String {
        let (cert, key) = self.issue(&["localhost", "127.0.0.1"], false);
        std::fs::write(self.path("server.pem"), &cert).unwrap();
        std::fs::write(self.path("server.key"), key).unwrap();
        cert
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn files(&self, mtls: bool) -> portcullis::tls::TlsFiles {
        portcullis::tls::TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mtls.then(|| self.path("ca.pem")),
        }
    }
}

async fn grpc_health(
    port: u16,
    pki: &Pki,
    identity: Option<(String, String)>,
) -> Result<i32, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = tonic::transport::Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|answer| answer.into_inner().status)
        .map_err(|e| e.to_string())
}

fn https_client(pki: &Pki, port: u16, identity: Option<(String, String)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into());
    if let Some((cert, key)) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_share_the_tls_listener() {
    let pki = Pki::new();
    pki.write_server();
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.tls = Some(pki.files(false));
    })
    .await;
    assert_eq!(
        grpc_health(app.port, &pki, None).await,
        Ok(tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    );
    let http = https_client(&pki, app.port, None);
    let healthz = http
        .get(format!("https://localhost:{}/healthz", app.port))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), reqwest::StatusCode::OK);
    let get_json = |path: &'static str| {
        let request = http.get(format!("https://localhost:{}{path}", app.port));
        async move {
            request
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let jwks = get_json("/.well-known/jwks.json").await;
    assert!(jwks["keys"].is_array());
    let discovery = get_json("/.well-known/openid-configuration").await;
    assert!(
        discovery["issuer"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "the default public URL follows the scheme: {discovery}"
    );
    // ALPN: gRPC clients get HTTP/2, browsers may keep HTTP/1.1.
    assert_eq!(
        handshake(app.port, &pki, &[b"h2", b"http/1.1"])
            .await
            .1
            .as_deref(),
        Some(&b"h2"[..])
    );
    assert_eq!(
        handshake(app.port, &pki, &[b"http/1.1"]).await.1.as_deref(),
        Some(&b"http/1.1"[..])
    );
    // Plain text on the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", app.port))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_with_a_signed_certificate_get_in() {
    let pki = Pki::new();
    pki.write_server();
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.tls = Some(pki.files(true));
    })
    .await;
    let client = pki.issue(&["service-a"], true);
    assert!(
        grpc_health(app.port, &pki, Some(client.clone()))
            .await
            .is_ok()
    );
    assert!(
        grpc_health(app.port, &pki, None).await.is_err(),
        "no client certificate, no answer"
    );
    let stranger = Pki::new().issue(&["intruder"], true);
    assert!(
        grpc_health(app.port, &pki, Some(stranger.clone()))
            .await
            .is_err(),
        "a certificate from another CA is refused"
    );
    let url = format!("https://localhost:{}/healthz", app.port);
    let with = https_client(&pki, app.port, Some(client))
        .get(&url)
        .send()
        .await;
    assert_eq!(with.unwrap().status(), reqwest::StatusCode::OK);
    let without = https_client(&pki, app.port, None).get(&url).send().await;
    assert!(without.is_err() || !without.unwrap().status().is_success());
}

/// The certificate the server presents now (DER of the leaf).
async fn presented_certificate(port: u16, pki: &Pki) -> Vec<u8> {
    handshake(port, pki, &[]).await.0
}

/// A TLS handshake offering `alpn`: (the leaf certificate's DER, the protocol chosen).
async fn handshake(port: u16, pki: &Pki, alpn: &[&[u8]]) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::pem::PemObject::from_pem_slice(pki.ca_pem.as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut config = config;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let (_, session) = stream.get_ref();
    (
        session.peer_certificates().unwrap()[0].to_vec(),
        session.alpn_protocol().map(<[u8]>::to_vec),
    )
}

fn der_of(pem: &str) -> Vec<u8> {
    let der: rustls::pki_types::CertificateDer =
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    der.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let pki = Pki::new();
    let first = pki.write_server();
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.tls = Some(pki.files(false));
    })
    .await;
    assert_eq!(presented_certificate(app.port, &pki).await, der_of(&first));

    // A renewal writes new files; a second later (file times are coarse) it is served.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = pki.write_server();
    let renewed = wait_for_async(|| async {
        (presented_certificate(app.port, &pki).await == der_of(&second)).then_some(())
    })
    .await;
    assert!(renewed.is_some(), "the renewed certificate is served");

    // A broken renewal keeps the certificate in use.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    write(&pki.path("server.pem"), "not a certificate");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(presented_certificate(app.port, &pki).await, der_of(&second));
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}
