//! The one outbound TLS set-up: hyper's client over rustls (the stack the AWS SDK already uses),
//! with the system's root certificates plus any extra roots the operator names (a private CA,
//! or a test certificate). Alert webhooks and functions' outbound calls both use it.

use std::path::Path;
use std::sync::Arc;

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::{Error, Result};

/// An http and https connector.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Environment variable naming a PEM file of extra root certificates to trust (beside the
/// system's) for outbound calls and alert webhooks.
pub const EXTRA_ROOTS_ENV: &str = "LEVEE_EXTRA_CA_FILE";

/// Reads the certificates of a PEM file.
pub fn load_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: std::result::Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Invalid(format!("reading certificates from {}: {e}", path.display())))?
        .collect();
    let certs = certs.map_err(|e| {
        Error::Invalid(format!("reading certificates from {}: {e}", path.display()))
    })?;
    if certs.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The extra roots named by [`EXTRA_ROOTS_ENV`], if set.
pub fn extra_roots_from_env() -> Result<Vec<CertificateDer<'static>>> {
    match std::env::var_os(EXTRA_ROOTS_ENV) {
        Some(p) if !p.is_empty() => {
            load_pem(Path::new(&p)).map_err(|e| Error::Invalid(format!("{EXTRA_ROOTS_ENV}: {e}")))
        }
        _ => Ok(Vec::new()),
    }
}

/// A connector trusting the system's roots and `extra`. Without usable system roots it trusts
/// `extra` alone (https to public hosts then fails, each call with the reason; http works).
pub fn connector(purpose: &str, extra: &[CertificateDer<'static>]) -> Connector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!(
            "{purpose}: no usable system root certificates; https works only to hosts signed by {EXTRA_ROOTS_ENV}"
        );
    }
    for cert in extra {
        if let Err(e) = roots.add(cert.clone()) {
            tracing::warn!("{purpose}: an extra root certificate was refused: {e}");
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Requests are small writes answered at once: Nagle's algorithm would only delay them.
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// An error with its sources, `a: b: c` (hyper's own message is often just "client error").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}
