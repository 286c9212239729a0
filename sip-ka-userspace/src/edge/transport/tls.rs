//! TLS toward UAs (RFC 3261 26.2, RFC 5630): the server side only, on the
//! same ports as TCP. A connection whose first byte is a TLS handshake
//! record (0x16) is TLS; SIP text never starts with that byte, so one
//! `--listen` address serves UDP, TCP and TLS.

use std::{fs::File, io::BufReader, path::Path, sync::Arc};

use anyhow::{bail, Context as _, Result};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The first byte of a TLS record carrying a handshake message.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// A TLS acceptor from a PEM certificate chain and a PEM private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_reader_iter(BufReader::new(
        File::open(cert).with_context(|| format!("--tls-cert {}", cert.display()))?,
    ))
    .collect::<Result<_, _>>()
    .with_context(|| format!("--tls-cert {}: not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        bail!("--tls-cert {}: no certificate in it", cert.display());
    }
    let key = PrivateKeyDer::from_pem_reader(BufReader::new(
        File::open(key).with_context(|| format!("--tls-key {}", key.display()))?,
    ))
    .with_context(|| format!("--tls-key {}: no PEM private key in it", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("--tls-cert/--tls-key: the key does not fit the certificate")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
