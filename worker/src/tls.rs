//! TLS to PostgreSQL: libpq's `sslmode` and `sslrootcert` read from the database URL, and the
//! rustls connector that implements them (the same rustls and crypto provider, aws-lc-rs, as the
//! AWS clients).
//!
//! tokio-postgres parses `sslmode=disable|prefer|require` only, so [`parse_database_url`] takes
//! `sslmode` and `sslrootcert` out of the URL (or `key=value` string) and hands the rest to
//! [`tokio_postgres::Config`]. Semantics as libpq's:
//!
//! | `sslmode` | TLS | certificate chain | host name |
//! |---|---|---|---|
//! | `disable` | never | – | – |
//! | `prefer` (default) | when the server offers it, else plain | only with `sslrootcert` | no |
//! | `require` | always | only with `sslrootcert` (then as `verify-ca`) | no |
//! | `verify-ca` | always | yes | no |
//! | `verify-full` | always | yes | yes |
//!
//! The chain is checked against `sslrootcert` (a PEM file, e.g. the RDS bundle
//! `global-bundle.pem`), or the system's CA certificates when it is unset or `system`.
//! Unlike libpq, `prefer` does not retry without TLS after a failed TLS handshake (only when the
//! server declines TLS): a certificate that does not verify is an error, never a silent
//! downgrade.
//!
//! Verification failures say what to change (`sslrootcert`, the host name, `sslmode`), and no
//! error or log line carries the URL's password.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{ConfigError, VerifyError};

/// libpq's `sslmode`, less `allow` (which tokio-postgres cannot do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, plain otherwise (libpq's default).
    #[default]
    Prefer,
    /// TLS always; the certificate is checked only when `sslrootcert` is set.
    Require,
    /// TLS always; the certificate chain is checked, not the host name.
    VerifyCa,
    /// TLS always; the certificate chain and the host name are checked.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported: use prefer (TLS when offered) or disable"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "sslmode={other:?}: use disable, prefer, require, verify-ca or verify-full"
                ));
            }
        })
    }
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The system's CA certificates (`sslrootcert` unset, or `sslrootcert=system`).
    System,
    /// A PEM file of CA certificates (`sslrootcert=PATH`).
    File(PathBuf),
}

impl fmt::Display for RootCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootCerts::System => f.write_str("the system's CA certificates"),
            RootCerts::File(p) => write!(f, "sslrootcert {}", p.display()),
        }
    }
}

/// The TLS part of a database URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: `None` when unset.
    pub root_cert: Option<RootCerts>,
}

impl TlsSettings {
    /// Whether the certificate chain is checked (libpq: `verify-*`, or any mode with
    /// `sslrootcert`).
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            SslMode::Disable => false,
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Prefer | SslMode::Require => self.root_cert.is_some(),
        }
    }

    /// Whether the host name must match the certificate (`verify-full`).
    pub fn verifies_host(&self) -> bool {
        self.mode == SslMode::VerifyFull
    }

    /// The tokio-postgres mode: what to do before the handshake.
    fn pg_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// The trusted roots, loaded (`None` when nothing is verified).
    ///
    /// # Errors
    /// An unreadable `sslrootcert`, one without a certificate, or no system certificates.
    pub fn load_roots(&self) -> Result<Option<RootCertStore>, ConfigError> {
        if !self.verifies_chain() {
            return Ok(None);
        }
        let mut store = RootCertStore::empty();
        match self.root_cert.as_ref().unwrap_or(&RootCerts::System) {
            RootCerts::File(path) => {
                let bad = |reason: String| invalid(format!("{}: {reason}", path.display()));
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(pem_error(e)))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(pem_error(e)))?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(bad(
                        "no CA certificate in it (expected PEM `BEGIN CERTIFICATE` blocks; for \
                         RDS: global-bundle.pem)"
                            .into(),
                    ));
                }
            }
            RootCerts::System => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    return Err(ConfigError::Invalid {
                        name: "sslmode",
                        reason: format!(
                            "{} needs CA certificates, and the system has none (install \
                             ca-certificates) or set sslrootcert / --db-sslrootcert to the \
                             server's CA bundle (for RDS: global-bundle.pem)",
                            self.mode
                        ),
                    });
                }
            }
        }
        Ok(Some(store))
    }

    /// The connector for these settings (one per pool: the roots are read here).
    ///
    /// # Errors
    /// As [`TlsSettings::load_roots`].
    pub fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let webpki = match self.load_roots()? {
            Some(roots) => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| invalid(format!("CA certificates: {e}")))?,
            ),
            None => None,
        };
        let verifier = Verifier {
            webpki,
            check_host: self.verifies_host(),
            roots: self.root_cert.clone().unwrap_or(RootCerts::System),
            provider: provider.clone(),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

fn invalid(reason: String) -> ConfigError {
    ConfigError::Invalid {
        name: "sslrootcert",
        reason,
    }
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read it: {e}"),
        other => format!("not a PEM file: {other:?}"),
    }
}

/// A database URL taken apart: what tokio-postgres connects with, and how TLS is done.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// Everything but the TLS settings (`ssl_mode` set from them).
    pub config: tokio_postgres::Config,
    /// `sslmode`, `sslrootcert`.
    pub tls: TlsSettings,
}

/// Parses a database URL (`postgres://…?sslmode=verify-full&sslrootcert=/path`) or `key=value`
/// connection string.
///
/// # Errors
/// An unknown `sslmode`, `sslrootcert=system` with a mode weaker than `verify-full` (as libpq),
/// or what tokio-postgres refuses. The password is never part of the message.
pub fn parse_database_url(url: &str) -> Result<ConnectSettings, ConfigError> {
    let (rest, params) = split_tls_params(url);
    let bad = |reason: String| ConfigError::Invalid {
        name: "database URL",
        reason,
    };
    let mut tls = TlsSettings::default();
    let mode_given = params.sslmode.is_some();
    if let Some(mode) = params.sslmode {
        tls.mode = mode.parse().map_err(bad)?;
    }
    if let Some(root) = params.sslrootcert.filter(|r| !r.is_empty()) {
        if root == "system" {
            if mode_given && tls.mode != SslMode::VerifyFull {
                return Err(bad(format!(
                    "sslrootcert=system needs sslmode=verify-full (as libpq), not {}",
                    tls.mode
                )));
            }
            // libpq: sslrootcert=system defaults sslmode to verify-full.
            tls.mode = SslMode::VerifyFull;
            tls.root_cert = Some(RootCerts::System);
        } else {
            tls.root_cert = Some(RootCerts::File(PathBuf::from(root)));
        }
    }
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| {
        // "invalid connection string" + the cause (e.g. "unknown option `sslcert`").
        let mut text = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(inner) = src {
            let t = inner.to_string();
            if !text.contains(&t) {
                text = format!("{text}: {t}");
            }
            src = inner.source();
        }
        bad(text)
    })?;
    config.ssl_mode(tls.pg_mode());
    Ok(ConnectSettings { config, tls })
}

/// Adds `sslrootcert=PATH` to a database URL (the `--db-sslrootcert` flag). The same path
/// already in the URL is fine; a different one is an error.
///
/// # Errors
/// A path that is not UTF-8, or a URL naming another `sslrootcert`.
pub fn with_root_cert(url: &str, path: &Path) -> Result<String, ConfigError> {
    let p = path.to_str().ok_or_else(|| ConfigError::Invalid {
        name: "--db-sslrootcert",
        reason: format!("{}: not a UTF-8 path", path.display()),
    })?;
    match split_tls_params(url).1.sslrootcert {
        Some(existing) if existing == p => return Ok(url.to_owned()),
        Some(existing) => {
            return Err(ConfigError::Invalid {
                name: "--db-sslrootcert",
                reason: format!(
                    "{p} differs from sslrootcert={existing} in the database URL: set one of them"
                ),
            });
        }
        None => {}
    }
    Ok(if is_url(url) {
        let sep = if url_query_start(url).is_some() {
            if url.ends_with('?') || url.ends_with('&') {
                ""
            } else {
                "&"
            }
        } else {
            "?"
        };
        format!("{url}{sep}sslrootcert={}", percent_encode(p))
    } else {
        let escaped = p.replace('\\', "\\\\").replace('\'', "\\'");
        format!("{} sslrootcert='{escaped}'", url.trim_end())
    })
}

/// The TLS parameters found in a connection string (last one wins, as in libpq).
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// Byte offset of a URL's `?`, looked for after the user info (a password may hold `?`).
fn url_query_start(url: &str) -> Option<usize> {
    let from = url.rfind('@').unwrap_or(0);
    url[from..].find('?').map(|i| from + i)
}

/// Removes `sslmode` and `sslrootcert` from a URL's query or a `key=value` string; returns the
/// rest (for tokio-postgres) and their decoded values.
fn split_tls_params(s: &str) -> (String, TlsParams) {
    let mut found = TlsParams::default();
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            found.sslmode = Some(value);
            true
        }
        "sslrootcert" => {
            found.sslrootcert = Some(value);
            true
        }
        _ => false,
    };
    if is_url(s) {
        let Some(q) = url_query_start(s) else {
            return (s.to_owned(), found);
        };
        let kept: Vec<&str> = s[q + 1..]
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(&percent_decode(k), percent_decode(v))
            })
            .filter(|pair| !pair.is_empty())
            .collect();
        let base = &s[..q];
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, found)
    } else {
        let kept: Vec<&str> = kv_pairs(s)
            .into_iter()
            .filter(|(k, v, _)| !take(k, v.clone()))
            .map(|(_, _, raw)| raw)
            .collect();
        (kept.join(" "), found)
    }
}

/// `key = value` pairs of a libpq connection string: (key, unquoted value, raw text).
fn kv_pairs(s: &str) -> Vec<(&str, String, &str)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        skip_ws(&mut i);
        if i >= b.len() || b[i] != b'=' {
            // Not a pair: keep it for tokio-postgres to report.
            out.push((key, String::new(), &s[start..i]));
            continue;
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = Vec::new();
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
            i = (i + 1).min(b.len());
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
        }
        out.push((
            key,
            String::from_utf8_lossy(&value).into_owned(),
            &s[start..i],
        ));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~/".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// The server certificate check for every mode: webpki's chain check (when the chain is
/// verified) with the host name check dropped for `verify-ca`/`require`, and errors that say
/// what to change. The handshake signatures are always checked.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    check_host: bool,
    roots: RootCerts,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    fn explain(&self, e: rustls::Error, host: &ServerName<'_>) -> rustls::Error {
        let msg = match &e {
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => format!(
                "certificate not trusted (checked against {}): set sslrootcert / \
                 --db-sslrootcert to the server's CA bundle (for RDS: global-bundle.pem)",
                self.roots
            ),
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            }) => format!(
                "certificate not valid for host {:?} (it names {}): connect to a host name the \
                 certificate names, or use sslmode=verify-ca to check the chain but not the \
                 host name",
                host.to_str(),
                if presented.is_empty() {
                    Cow::Borrowed("no host")
                } else {
                    Cow::Owned(
                        presented
                            .iter()
                            .map(|n| san(n))
                            .collect::<Vec<_>>()
                            .join(", "),
                    )
                }
            ),
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => format!(
                "certificate not valid for host {:?}: connect to a host name the certificate \
                 names, or use sslmode=verify-ca to check the chain but not the host name",
                host.to_str()
            ),
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => format!("{e}: the server's certificate must be renewed"),
            _ => return e,
        };
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            VerifyError(msg),
        ))))
    }
}

/// A name of a certificate's subjectAltName as webpki shows it (`DnsName("db.example")`,
/// `IpAddress(10.0.0.1)`), without the wrapping.
fn san(name: &str) -> &str {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(name)
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Ok(v) => Ok(v),
            // webpki checks the chain first, the name last: a name error means a good chain.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_host => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(self.explain(e, server_name)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tls_params_are_taken_out_and_the_rest_kept() {
        let s = parse_database_url(
            "postgres://u:p%3Fw@db.example:5433/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fetc%2Frds%20ca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(s.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            s.tls.root_cert,
            Some(RootCerts::File("/etc/rds ca.pem".into()))
        );
        assert_eq!(s.config.get_application_name(), Some("a"));
        assert_eq!(s.config.get_password(), Some(&b"p?w"[..]));
        assert_eq!(
            s.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(5))
        );
        assert_eq!(
            s.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn modes_and_defaults() {
        let s = parse_database_url("postgres://u@h/x").unwrap();
        assert_eq!(s.tls, TlsSettings::default());
        assert_eq!(s.tls.mode, SslMode::Prefer);
        assert!(!s.tls.verifies_chain());
        assert_eq!(
            s.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
        for (m, pg, chain, host) in [
            (
                "disable",
                tokio_postgres::config::SslMode::Disable,
                false,
                false,
            ),
            (
                "prefer",
                tokio_postgres::config::SslMode::Prefer,
                false,
                false,
            ),
            (
                "require",
                tokio_postgres::config::SslMode::Require,
                false,
                false,
            ),
            (
                "verify-ca",
                tokio_postgres::config::SslMode::Require,
                true,
                false,
            ),
            (
                "verify-full",
                tokio_postgres::config::SslMode::Require,
                true,
                true,
            ),
        ] {
            let s = parse_database_url(&format!("postgresql://u@h/x?sslmode={m}")).unwrap();
            assert_eq!(s.tls.mode.as_str(), m);
            assert_eq!(s.config.get_ssl_mode(), pg, "{m}");
            assert_eq!(s.tls.verifies_chain(), chain, "{m}");
            assert_eq!(s.tls.verifies_host(), host, "{m}");
        }
        // require + sslrootcert = verify-ca, as libpq.
        let s = parse_database_url("postgres://u@h/x?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert!(s.tls.verifies_chain() && !s.tls.verifies_host());
    }

    #[test]
    fn bad_modes_are_refused_without_the_password() {
        for (url, want) in [
            ("postgres://u:hunter2@h/x?sslmode=verify", "verify-full"),
            ("postgres://u:hunter2@h/x?sslmode=allow", "not supported"),
            (
                "postgres://u:hunter2@h/x?sslmode=require&sslrootcert=system",
                "verify-full",
            ),
            ("postgres://u:hunter2@h/x?sslcert=/c.pem", "sslcert"),
        ] {
            let e = parse_database_url(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let s = parse_database_url("postgres://u@h/x?sslrootcert=system").unwrap();
        assert_eq!(s.tls.mode, SslMode::VerifyFull);
        assert_eq!(s.tls.root_cert, Some(RootCerts::System));
    }

    #[test]
    fn key_value_strings() {
        let s = parse_database_url(
            "host=db.example user=u password='it''s' sslmode = verify-ca sslrootcert='/a b/ca.pem' dbname=x",
        );
        // `''` is not libpq's escape; tokio-postgres refuses it the same way as before.
        assert!(s.is_err());
        let s = parse_database_url(
            r"host=db.example user=u password='it\'s' sslmode = verify-ca sslrootcert='/a b/ca.pem' dbname=x",
        )
        .unwrap();
        assert_eq!(s.tls.mode, SslMode::VerifyCa);
        assert_eq!(s.tls.root_cert, Some(RootCerts::File("/a b/ca.pem".into())));
        assert_eq!(s.config.get_password(), Some(&b"it's"[..]));
        assert_eq!(s.config.get_dbname(), Some("x"));
    }

    #[test]
    fn root_cert_flag_is_folded_into_the_url() {
        let p = Path::new("/etc/ssl/rds global-bundle.pem");
        for url in [
            "postgres://u@h/x",
            "postgres://u@h/x?sslmode=verify-full",
            "host=h user=u sslmode=verify-full",
        ] {
            let with = with_root_cert(url, p).unwrap();
            let s = parse_database_url(&with).unwrap();
            assert_eq!(s.tls.root_cert, Some(RootCerts::File(p.into())), "{with}");
            // Idempotent.
            assert_eq!(with_root_cert(&with, p).unwrap(), with);
        }
        let e = with_root_cert("postgres://u@h/x?sslrootcert=/other.pem", p).unwrap_err();
        assert!(e.to_string().contains("/other.pem"), "{e}");
    }

    #[test]
    fn root_cert_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for (path, want) in [
            (dir.path().join("missing.pem"), "cannot read"),
            (empty, "no CA certificate"),
        ] {
            let t = TlsSettings {
                mode: SslMode::VerifyFull,
                root_cert: Some(RootCerts::File(path)),
            };
            let e = t.connector().err().expect("refused").to_string();
            assert!(e.contains(want), "{e}");
        }
        // Nothing verified: nothing read.
        let t = TlsSettings {
            mode: SslMode::Require,
            root_cert: None,
        };
        assert!(t.connector().is_ok());
    }
}
