//! Throwaway certificates for TLS tests (rcgen), written as PEM files a Blueprint can name.

use std::path::Path;

/// A CA issuing the certificates below.
pub type Authority = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

/// A self-signed CA, written as `{name}.pem` in `dir`.
pub fn ca(dir: &Path, name: &str) -> Authority {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), ca.pem()).unwrap();
    ca
}

/// A certificate signed by `ca`, written as `{name}.pem` and `{name}.key` in `dir`: for the
/// server (`localhost`, `127.0.0.1`) or a client.
pub fn issue(dir: &Path, name: &str, ca: &Authority, server: bool) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names = if server {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    } else {
        Vec::new()
    };
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, ca).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}
