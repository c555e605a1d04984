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

/// A certificate chain and its key from `c`'s files; errors name their config positions.
pub fn read_pair(
    file: &str,
    c: &crate::config::CertConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Vec<ConfigError>> {
    let err = |at: Pos, field: String, reason: String| ConfigError::at(file, at, field, reason);
    let certs = read_certs(&c.cert).map_err(|r| err(c.cert_at, format!("{}.cert", c.field), r));
    let key = read_key(&c.key).map_err(|r| err(c.key_at, format!("{}.key", c.field), r));
    match (certs, key) {
        (Ok(c), Ok(k)) => Ok((c, k)),
        (a, b) => Err(a.err().into_iter().chain(b.err()).collect()),
    }
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

/// A listener's rustls config and the expiry of each certificate it serves.
pub struct ListenerTls {
    /// The server config handed to new connections.
    pub config: Arc<rustls::ServerConfig>,
    /// Each certificate's file (as configured) and its leaf's `notAfter` in Unix seconds.
    pub expiries: Vec<(String, i64)>,
}

/// Builds the rustls server config for a listener; errors name the certificate's config position.
pub fn server_config(file: &str, tls: &TlsConfig) -> Result<ListenerTls, Vec<ConfigError>> {
    let provider = provider();
    let mut errors = Vec::new();
    let err = |at: Pos, field: String, reason: String| ConfigError::at(file, at, field, reason);
    let mut resolver = SniResolver {
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        implicit: Vec::new(),
        entries: Vec::new(),
    };
    let mut expiries = Vec::new();
    for c in &tls.certificates {
        let (certs, key) = match read_pair(file, c) {
            Ok(pair) => pair,
            Err(e) => {
                errors.extend(e);
                continue;
            }
        };
        let leaf = certs[0].clone();
        match not_after(&leaf) {
            Some(t) => expiries.push((c.cert.display().to_string(), t)),
            None => errors.push(err(
                c.cert_at,
                format!("{}.cert", c.field),
                format!(
                    "{}: the first certificate has no readable validity period",
                    c.cert.display()
                ),
            )),
        }
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
    // Mutual TLS: a verifier of client certificates against the listener's CAs.
    let verifier = tls.client_auth.as_ref().map(|ca| {
        let roots = crate::upstream::roots(file, false, &ca.ca_files, &ca.field)?;
        let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if !ca.required {
            v = v.allow_unauthenticated();
        }
        v.build().map_err(|e| {
            let at = ca.ca_files.first().map_or(Pos { line: 1, column: 1 }, |(_, at)| *at);
            vec![err(at, ca.field.clone(), format!("no usable client CA: {e}"))]
        })
    });
    let verifier = match verifier.transpose() {
        Ok(v) => v,
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| vec![err(Pos { line: 1, column: 1 }, "tls".into(), e.to_string())])?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ListenerTls {
        config: Arc::new(cfg),
        expiries,
    })
}

/// The QUIC server config of a listener: its TLS config (the same certificates and SNI) with
/// ALPN `h3`, early data only when `early_data` is on, and the listener's transport limits.
pub fn quic_config(tls: &rustls::ServerConfig, q: &crate::config::QuicConfig) -> Result<quinn::ServerConfig, String> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    // QUIC takes 0-RTT either off (0) or on (u32::MAX), nothing between (RFC 9001 §4.6.1).
    tls.max_early_data_size = if q.early_data { u32::MAX } else { 0 };
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(q.max_streams))
        // The client's HTTP/3 control stream and QPACK streams, and a little room.
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(8))
        .stream_receive_window(quinn::VarInt::from_u32(q.stream_window))
        .receive_window(quinn::VarInt::from_u32(q.connection_window))
        .max_idle_timeout(Some(
            q.idle_timeout.try_into().map_err(|e| format!("idle_timeout: {e}"))?,
        ));
    sc.transport_config(Arc::new(t));
    sc.migration(true);
    Ok(sc)
}

/// The leaf certificate's `notAfter` (RFC 5280 §4.1.2.5) in Unix seconds; rustls has already
/// accepted the certificate, this only reads its date.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, c) = X509Certificate::from_der(cert.as_ref()).ok()?;
    Some(c.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_until(year: i32, month: u8, day: u8) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["example.test".to_string()]).expect("params");
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("certificate").der().clone()
    }

    #[test]
    fn not_after_reads_utc_time_and_generalized_time() {
        // 2031-05-17T00:00:00Z and 2051-02-28T00:00:00Z (after 2049 RFC 5280 uses GeneralizedTime).
        assert_eq!(not_after(&cert_until(2031, 5, 17)), Some(1_936_742_400));
        assert_eq!(not_after(&cert_until(2051, 2, 28)), Some(2_561_155_200));
        assert_eq!(not_after(&cert_until(2000, 3, 1)), Some(951_868_800));
    }

    #[test]
    fn not_after_refuses_what_is_not_a_certificate() {
        let good = cert_until(2031, 5, 17);
        let bytes = good.as_ref();
        for cut in [0, 1, 2, 10, bytes.len() / 2] {
            assert_eq!(
                not_after(&CertificateDer::from(bytes[..cut].to_vec())),
                None,
                "cut at {cut}"
            );
        }
        assert_eq!(
            not_after(&CertificateDer::from(vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff])),
            None
        );
        assert_eq!(not_after(&CertificateDer::from(b"not der at all".to_vec())), None);
    }
}
