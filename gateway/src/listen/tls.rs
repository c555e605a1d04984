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
    let mut expiries = Vec::new();
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

/// One DER element: its tag and contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The leaf certificate's `notAfter` (RFC 5280 §4.1.2.5) in Unix seconds.
///
/// Walks the DER just far enough: Certificate → tbsCertificate → [version] serial signature
/// issuer validity. rustls has already accepted the certificate; this only reads its date.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (0x30, certificate, _) = der_element(cert.as_ref())? else {
        return None;
    };
    let (0x30, mut tbs, _) = der_element(certificate)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2; // explicit version
    }
    for _ in 0..3 {
        tbs = der_element(tbs)?.2; // serial, signature algorithm, issuer
    }
    let (0x30, validity, _) = der_element(tbs)? else {
        return None;
    };
    let (_, _, validity) = der_element(validity)?; // notBefore
    let (tag, time, _) = der_element(validity)?;
    let text = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        0x17 if text.len() == 13 => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() == 15 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !rest.ends_with('Z') || !rest[..10].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| -> i64 { rest[i..i + 2].parse().unwrap_or(0) };
    let (month, day) = (field(0), field(2));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(crate::calendar::days_from_civil(year, month, day) * 86_400 + field(4) * 3600 + field(6) * 60 + field(8))
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
