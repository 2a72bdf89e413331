//! TLS to Redis beyond the URL's `rediss://`: a private certificate
//! authority, and a client certificate for servers that ask for one
//! (Redis's `tls-auth-clients yes`, its default).
//!
//! Without these files, `rediss://` checks the server's certificate
//! against the system's trust store (and `SSL_CERT_FILE`, which the
//! client honours). With a CA file, against that file's certificates
//! only: a Redis with a private CA is trusted without trusting it for
//! everything else on the machine. There is no way to skip the check.

use std::path::{Path, PathBuf};

use ::redis::{Client, ClientTlsConfig, IntoConnectionInfo, RedisResult, TlsCertificates};

/// The files named by `redis_tls_ca_file`, `redis_tls_cert_file` and
/// `redis_tls_key_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificates Redis's certificate must chain to (instead of the
    /// system's).
    pub ca_file: Option<PathBuf>,
    /// This client's PEM certificate (chain), sent when Redis asks.
    pub cert_file: Option<PathBuf>,
    /// Its PEM private key.
    pub key_file: Option<PathBuf>,
}

/// What the files hold, ready for the client; `None` when no file is named.
pub type Certificates = Option<TlsCertificates>;

impl TlsFiles {
    /// True when any file is named.
    pub fn any(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Reads the files. The error names the setting and the file, and says
    /// what is wrong (never the file's contents).
    pub fn load(&self) -> Result<Certificates, TlsFileError> {
        if !self.any() {
            return Ok(None);
        }
        let root_cert = match &self.ca_file {
            Some(path) => Some(read_pem("redis_tls_ca_file", path, "CERTIFICATE")?),
            None => None,
        };
        let client_tls = match (&self.cert_file, &self.key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read_pem("redis_tls_cert_file", cert, "CERTIFICATE")?,
                client_key: read_pem("redis_tls_key_file", key, "PRIVATE KEY")?,
            }),
            (Some(_), None) => {
                return Err(TlsFileError {
                    setting: "redis_tls_cert_file",
                    problem: "set without redis_tls_key_file: a client certificate \
                              needs its private key"
                        .into(),
                });
            }
            (None, Some(_)) => {
                return Err(TlsFileError {
                    setting: "redis_tls_key_file",
                    problem: "set without redis_tls_cert_file: a private key needs \
                              its certificate"
                        .into(),
                });
            }
        };
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

/// A TLS file that cannot be used: which setting, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct TlsFileError {
    pub setting: &'static str,
    pub problem: String,
}

impl std::fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting, self.problem)
    }
}

/// A PEM file that holds at least one block whose label ends in `label`
/// (`PRIVATE KEY` matches PKCS#8, RSA and EC keys).
fn read_pem(setting: &'static str, path: &Path, label: &str) -> Result<Vec<u8>, TlsFileError> {
    let fail = |problem: String| TlsFileError { setting, problem };
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let holds = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|found| found.ends_with(label))
    });
    if !holds {
        return Err(fail(format!(
            "{} holds no PEM {label} block",
            path.display()
        )));
    }
    Ok(bytes)
}

/// A client for `url` with these certificates (or the system's trust store
/// when there are none).
pub(crate) fn client<T: IntoConnectionInfo>(url: T, certs: &Certificates) -> RedisResult<Client> {
    match certs {
        Some(certs) => Client::build_with_tls(url, certs.clone()),
        None => Client::open(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn files_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = file(
            dir.path(),
            "c.pem",
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        );
        let key = file(
            dir.path(),
            "k.pem",
            "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n",
        );
        let junk = file(dir.path(), "j.pem", "not a certificate\n");

        assert!(TlsFiles::default().load().unwrap().is_none());
        let both = TlsFiles {
            ca_file: Some(cert.clone()),
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
        };
        let loaded = both.load().unwrap().unwrap();
        assert!(loaded.root_cert.is_some() && loaded.client_tls.is_some());

        let err = TlsFiles {
            ca_file: Some(junk.clone()),
            ..Default::default()
        }
        .load()
        .unwrap_err();
        assert_eq!(err.setting, "redis_tls_ca_file");
        assert!(
            err.problem.contains("j.pem") && err.problem.contains("no PEM CERTIFICATE"),
            "{err}"
        );
        let err = TlsFiles {
            ca_file: Some(dir.path().join("none.pem")),
            ..Default::default()
        }
        .load()
        .unwrap_err();
        assert!(
            err.problem.contains("cannot read") && err.problem.contains("none.pem"),
            "{err}"
        );
        let err = TlsFiles {
            cert_file: Some(cert.clone()),
            ..Default::default()
        }
        .load()
        .unwrap_err();
        assert!(
            err.to_string().contains("without redis_tls_key_file"),
            "{err}"
        );
        let err = TlsFiles {
            cert_file: Some(cert),
            key_file: Some(junk),
            ..Default::default()
        }
        .load()
        .unwrap_err();
        assert_eq!(err.setting, "redis_tls_key_file", "{err}");
    }
}
