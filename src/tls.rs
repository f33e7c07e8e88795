//! TLS on the one listener: gRPC and HTTP alike, ALPN `h2` and `http/1.1`, optionally
//! requiring client certificates (mTLS). Certificates are re-read on SIGHUP and when their
//! files change, so a renewal (cert-manager, certbot) needs no restart; a broken renewal
//! keeps the old certificate and says why.

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// Where the listener's certificate, key and (for mTLS) client CA are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: CA certificates client certificates must chain to; `None`: no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.cert, &self.key].into_iter().chain(&self.client_ca)
    }

    /// The server configuration these files make.
    pub fn load(&self) -> anyhow::Result<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
        };
        let certs = CertificateDer::pem_slice_iter(&read(&self.cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{}: no certificate in it", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in CertificateDer::pem_slice_iter(&read(path)?) {
                    roots
                        .add(ca.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            anyhow::anyhow!("{} and {}: {e}", self.cert.display(), self.key.display())
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// The acceptor in use, swapped when the files change.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<TlsAcceptor>,
}

impl Tls {
    /// Loads the files; an error here stops the start.
    pub fn new(files: TlsFiles) -> anyhow::Result<Arc<Tls>> {
        let config = files.load()?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(TlsAcceptor::from(Arc::new(config))),
        }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().expect("TLS lock poisoned").clone()
    }

    /// Re-reads the files; on error the certificate in use stays.
    pub fn reload(&self) {
        match self.files.load() {
            Ok(config) => {
                *self.current.write().expect("TLS lock poisoned") =
                    TlsAcceptor::from(Arc::new(config));
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "TLS files unusable: keeping the certificate in use");
            }
        }
    }

    /// Reloads on SIGHUP, and when a file's modification time changes (checked every
    /// `interval`), until `stopped`.
    pub async fn watch(
        self: Arc<Tls>,
        interval: Duration,
        stopped: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stopped);
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = self.files.modified();
        loop {
            #[cfg(unix)]
            let hangup_received = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup_received = std::future::pending::<()>();
            tokio::select! {
                () = &mut stopped => return,
                () = hangup_received => {
                    // What was just loaded is not reloaded again at the next poll.
                    seen = self.files.modified();
                    self.reload();
                }
                () = tokio::time::sleep(interval) => {
                    let now = self.files.modified();
                    if now != seen {
                        seen = now;
                        self.reload();
                    }
                }
            }
        }
    }
}
