//! TLS for client listeners: certificates from PEM files, SNI selection, TLS 1.3 by default.
//!
//! Built with the config snapshot, so a reload swaps certificates for new connections while
//! existing ones keep theirs. Key exchange offers the hybrid post-quantum X25519MLKEM768 first,
//! then X25519, then the NIST curves.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{ConfigError, Pos, TlsConfig};

/// The crypto provider used everywhere: aws-lc-rs with post-quantum hybrid key exchange first.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = aws_lc_rs::default_provider();
    p.kx_groups = vec![
        aws_lc_rs::kx_group::X25519MLKEM768,
        aws_lc_rs::kx_group::X25519,
        aws_lc_rs::kx_group::SECP256R1,
        aws_lc_rs::kx_group::SECP384R1,
    ];
    Arc::new(p)
}

/// Reads every certificate from a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(format!("{} contains no PEM certificate", path.display())),
        Err(e) => Err(format!("{} is not valid PEM: {e}", path.display())),
    }
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{} holds no usable PEM private key: {e}", path.display()))
}

struct Entry {
    key: Arc<CertifiedKey>,
    leaf: CertificateDer<'static>,
}

/// Chooses a certificate by SNI: explicit exact names, explicit wildcards, then any certificate
/// whose own names cover the requested one, then the first certificate.
pub struct SniResolver {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    implicit: Vec<usize>,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("certificates", &self.entries.len())
            .finish()
    }
}

// === impl SniResolver ===

impl SniResolver {
    fn select(&self, name: Option<&str>) -> Option<usize> {
        let Some(name) = name else { return Some(0) };
        let name = name.to_ascii_lowercase();
        if let Some(i) = self.exact.get(&name) {
            return Some(*i);
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(i) = self.wildcard.get(parent) {
                return Some(*i);
            }
        }
        if let Ok(sn) = ServerName::try_from(name.as_str()) {
            for &i in &self.implicit {
                let ok = webpki::EndEntityCert::try_from(&self.entries[i].leaf)
                    .map(|c| c.verify_is_valid_for_subject_name(&sn).is_ok())
                    .unwrap_or(false);
                if ok {
                    return Some(i);
                }
            }
        }
        Some(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = self.select(hello.server_name())?;
        self.entries.get(i).map(|e| e.key.clone())
    }
}

/// Builds the rustls server config for a listener; errors name the certificate's config position.
pub fn server_config(file: &str, tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, Vec<ConfigError>> {
    let provider = provider();
    let mut errors = Vec::new();
    let err = |at: Pos, field: String, reason: String| ConfigError {
        file: file.to_string(),
        line: at.line,
        column: at.column,
        field,
        reason,
    };
    let mut resolver = SniResolver {
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        implicit: Vec::new(),
        entries: Vec::new(),
    };
    for c in &tls.certificates {
        let certs = read_certs(&c.cert).map_err(|r| err(c.cert_at, format!("{}.cert", c.field), r));
        let key = read_key(&c.key).map_err(|r| err(c.key_at, format!("{}.key", c.field), r));
        let (certs, key) = match (certs, key) {
            (Ok(c), Ok(k)) => (c, k),
            (a, b) => {
                errors.extend(a.err());
                errors.extend(b.err());
                continue;
            }
        };
        let leaf = certs[0].clone();
        let ck = match CertifiedKey::from_der(certs, key, &provider) {
            Ok(ck) => ck,
            Err(e) => {
                errors.push(err(
                    c.key_at,
                    format!("{}.key", c.field),
                    format!(
                        "{} does not fit the certificate {}: {e}",
                        c.key.display(),
                        c.cert.display()
                    ),
                ));
                continue;
            }
        };
        let idx = resolver.entries.len();
        resolver.entries.push(Entry {
            key: Arc::new(ck),
            leaf,
        });
        if c.server_names.is_empty() {
            resolver.implicit.push(idx);
        }
        for n in &c.server_names {
            match n.strip_prefix("*.") {
                Some(parent) => resolver.wildcard.entry(parent.to_string()).or_insert(idx),
                None => resolver.exact.entry(n.clone()).or_insert(idx),
            };
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| vec![err(Pos { line: 1, column: 1 }, "tls".into(), e.to_string())])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
