//! Client certificates: what a verified certificate on the connection tells upstreams.
//!
//! rustls has verified the chain against the listener's `tls.client_auth` CAs before any
//! request; here the leaf is only read (x509-parser), once per connection: its SHA-256, subject
//! and subject alternative names (URI, DNS), and the `X-Forwarded-Client-Cert` element made of
//! them, in the format Envoy writes: `Hash=…;Subject="…";URI=…;DNS=…`.

use http::HeaderValue;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The header upstreams read a verified client certificate from.
pub static FORWARDED_CLIENT_CERT: http::HeaderName = http::HeaderName::from_static("x-forwarded-client-cert");

/// A verified client certificate, as upstreams and telemetry see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// SHA-256 of the leaf's DER, lowercase hex.
    pub sha256: String,
    /// Subject distinguished name (RFC 4514 order as written in the certificate).
    pub subject: String,
    /// URI subject alternative names (e.g. SPIFFE IDs).
    pub uris: Vec<String>,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// This certificate's `X-Forwarded-Client-Cert` element.
    pub forwarded: HeaderValue,
}

// === impl ClientCert ===

impl ClientCert {
    /// Reads the leaf `der`; `None` if it does not parse (rustls accepted it, so only a
    /// certificate x509-parser cannot read).
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let sha256 = super::session::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref());
        let subject = cert.subject().to_string();
        let (mut uris, mut dns) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    _ => {}
                }
            }
        }
        let mut element = format!("Hash={sha256}");
        if !subject.is_empty() {
            element.push_str(";Subject=");
            element.push_str(&quoted(&subject));
        }
        for u in &uris {
            element.push_str(";URI=");
            element.push_str(&quoted(u));
        }
        for d in &dns {
            element.push_str(";DNS=");
            element.push_str(&quoted(d));
        }
        // Only printable ASCII goes into the header; anything else drops the element to its hash.
        let forwarded = HeaderValue::from_str(&element)
            .or_else(|_| HeaderValue::from_str(&format!("Hash={sha256}")))
            .ok()?;
        Some(ClientCert {
            sha256,
            subject,
            uris,
            dns,
            forwarded,
        })
    }
}

/// `v` as an XFCC value: double-quoted (with `"` and `\` escaped) when it holds a separator.
fn quoted(v: &str) -> String {
    if !v.contains([',', ';', '=', '"', '\\', ' ']) {
        return v.to_string();
    }
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Sets `X-Forwarded-Client-Cert` on an upstream request: a client's own value is dropped
/// unless it comes from a trusted proxy (then this connection's element, if any, is appended,
/// comma-separated); otherwise only this connection's element is sent.
pub fn forward(headers: &mut http::HeaderMap, cert: Option<&ClientCert>, trusted_peer: bool) {
    if !trusted_peer {
        headers.remove(&FORWARDED_CLIENT_CERT);
    }
    let Some(c) = cert else { return };
    let value = match headers.get(&FORWARDED_CLIENT_CERT) {
        Some(before) => {
            let mut v = before.as_bytes().to_vec();
            v.push(b',');
            v.extend_from_slice(c.forwarded.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or_else(|_| c.forwarded.clone())
        }
        None => c.forwarded.clone(),
    };
    headers.insert(&FORWARDED_CLIENT_CERT, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["device-7.example.com".to_string()]).unwrap_or_default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "device 7");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc");
        for u in uris {
            if let Ok(u) = rcgen::string::Ia5String::try_from(u.to_string()) {
                params.subject_alt_names.push(rcgen::SanType::URI(u));
            }
        }
        let key = rcgen::KeyPair::generate().ok();
        key.and_then(|k| params.self_signed(&k).ok())
            .map(|c| c.der().to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn a_certificate_becomes_an_xfcc_element() {
        let der = cert(&["spiffe://example.com/device/7"]);
        let c = ClientCert::from_der(&der);
        assert!(c.is_some(), "parses");
        let Some(c) = c else { return };
        assert_eq!(c.sha256.len(), 64);
        assert!(c.subject.contains("CN=device 7"), "{}", c.subject);
        assert_eq!(c.uris, ["spiffe://example.com/device/7"]);
        assert_eq!(c.dns, ["device-7.example.com"]);
        let v = c.forwarded.to_str().unwrap_or_default().to_string();
        assert!(v.starts_with(&format!("Hash={};Subject=\"", c.sha256)), "{v}");
        assert!(v.contains("Example\\\\, Inc") || v.contains("Example, Inc"), "{v}");
        assert!(
            v.ends_with(";URI=spiffe://example.com/device/7;DNS=device-7.example.com"),
            "{v}"
        );
    }

    #[test]
    fn what_is_not_a_certificate_gives_none() {
        assert!(ClientCert::from_der(b"not a certificate").is_none());
        assert!(ClientCert::from_der(&[]).is_none());
    }

    #[test]
    fn forwarding_keeps_a_trusted_proxy_value_and_drops_an_untrusted_one() {
        let c = ClientCert::from_der(&cert(&[]));
        let mut h = http::HeaderMap::new();
        h.insert(&FORWARDED_CLIENT_CERT, HeaderValue::from_static("Hash=forged"));
        forward(&mut h, None, false);
        assert!(
            h.get(&FORWARDED_CLIENT_CERT).is_none(),
            "an untrusted client's value is dropped"
        );
        h.insert(&FORWARDED_CLIENT_CERT, HeaderValue::from_static("Hash=forged"));
        forward(&mut h, c.as_ref(), false);
        let ours = c.as_ref().map(|c| c.forwarded.clone());
        assert_eq!(h.get(&FORWARDED_CLIENT_CERT), ours.as_ref(), "replaced by ours");
        h.insert(&FORWARDED_CLIENT_CERT, HeaderValue::from_static("Hash=edge"));
        forward(&mut h, c.as_ref(), true);
        let v = h
            .get(&FORWARDED_CLIENT_CERT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            v.starts_with("Hash=edge,Hash="),
            "appended after a trusted proxy's: {v}"
        );
    }
}
