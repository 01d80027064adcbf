//! Certificates made at test time for TLS tests: a CA, a server
//! certificate it signs for `127.0.0.1` and `localhost`, and a second CA
//! that signed nothing (the wrong one to trust). Written as PEM files to a
//! folder of the test's own, removed on drop.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::servers::unique;

/// The PEM files of a test's certificates.
#[derive(Debug)]
pub struct TestPki {
    dir: PathBuf,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    /// The server's certificate, for `127.0.0.1` and `localhost`.
    pub server_cert: PathBuf,
    /// Its private key.
    pub server_key: PathBuf,
}

/// A CA's parameters, named `name`.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to check");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl TestPki {
    /// Makes the certificates and writes them to a folder named after
    /// `test`.
    pub fn make(test: &str) -> TestPki {
        let dir = std::env::temp_dir().join(format!("callwatch-pki-{}", unique(test)));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let pki = TestPki {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            dir,
        };
        let ca_key = KeyPair::generate().expect("a key");
        let ca = ca_params("callwatch test CA");
        write(&pki.ca, &ca.self_signed(&ca_key).expect("a CA").pem());
        let other_key = KeyPair::generate().expect("a key");
        let other = ca_params("callwatch other CA");
        write(
            &pki.other_ca,
            &other.self_signed(&other_key).expect("a CA").pem(),
        );

        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().expect("a key");
        let mut server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("valid names");
        server
            .distinguished_name
            .push(DnType::CommonName, "callwatch test server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = server.signed_by(&server_key, &issuer).expect("signed");
        write(&pki.server_cert, &cert.pem());
        write(&pki.server_key, &server_key.serialize_pem());
        pki
    }

    /// The folder the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn write(path: &Path, pem: &str) {
    std::fs::write(path, pem).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
