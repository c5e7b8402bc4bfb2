//! A certificate authority for one machine: `./orderflow up` and the tests make one, with a
//! certificate per component (valid for its name, `localhost`, `127.0.0.1` and `::1`, for
//! serving and for calling). The CA's private key is never written: once the certificates are signed it is
//! dropped, so nothing on disk can sign another. A set with a file missing is made anew whole.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Makes the certificate sets.
pub struct LocalCa;

/// Where a set's files are.
#[derive(Debug, Clone)]
pub struct LocalCaFiles {
    dir: PathBuf,
}

impl LocalCaFiles {
    /// The files of the set in `dir`, whether or not they exist yet ([`LocalCa::ensure`]
    /// makes them).
    pub fn at(dir: &Path) -> LocalCaFiles {
        LocalCaFiles {
            dir: dir.to_owned(),
        }
    }

    /// The CA certificate clients and servers trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `name`'s certificate and private key.
    pub fn identity(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
        )
    }
}

impl LocalCa {
    /// The set in `dir` with a certificate for each of `names`, made when any file is absent.
    pub fn ensure(dir: &Path, names: &[&str]) -> anyhow::Result<LocalCaFiles> {
        let files = LocalCaFiles::at(dir);
        let complete = files.ca().exists()
            && names.iter().all(|name| {
                let (cert, key) = files.identity(name);
                cert.exists() && key.exists()
            });
        if !complete {
            make(&files, names).with_context(|| {
                format!("cannot make the local certificates in {}", dir.display())
            })?;
        }
        Ok(files)
    }
}

fn make(files: &LocalCaFiles, names: &[&str]) -> anyhow::Result<()> {
    fs::create_dir_all(&files.dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "orderflow local CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    for name in names {
        let key = KeyPair::generate()?;
        // Its own name too: the host name it has on a container network.
        let mut params = CertificateParams::new(vec![
            (*name).to_owned(),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("orderflow {name}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer)?;
        let (cert_path, key_path) = files.identity(name);
        fs::write(&cert_path, cert.pem())?;
        write_private(&key_path, &key.serialize_pem())?;
    }
    // Last: its presence marks a complete set.
    fs::write(files.ca(), ca_cert.pem())?;
    Ok(())
}

/// Writes a file only its owner may read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
