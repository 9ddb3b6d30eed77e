//! TLS as libpq does it: `sslmode` (`disable`, `allow`, `prefer`,
//! `require`, `verify-ca`, `verify-full`), `sslrootcert`, `sslcert` and
//! `sslkey`, taken from the connection string, else from `PGSSLMODE`,
//! `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY`, else libpq's defaults:
//! `prefer`, and `~/.postgresql/root.crt`, `postgresql.crt`,
//! `postgresql.key` when those files exist.
//!
//! As in libpq: `require` verifies the server's certificate when a root
//! certificate file exists (it then behaves as `verify-ca`); `verify-ca`
//! and `verify-full` insist on one; only `verify-full` checks the host
//! name; a Unix-domain socket never uses TLS. The connection library knows
//! only `disable`, `prefer` and `require`, so the other modes are taken out
//! of the connection string here and carried out by the TLS connector
//! (OpenSSL, through `postgres-openssl`).
//!
//! Resolution is pure (tested without a server); only [`connector`] reads files.

use crate::exit::{Failure, Result};
use postgres::config::SslMode;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(s: &str) -> Result<Mode> {
        Ok(match s {
            "disable" => Mode::Disable,
            "allow" => Mode::Allow,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(Failure::usage(format!(
                    "invalid sslmode value: \"{other}\" (disable, allow, prefer, require, verify-ca or verify-full)"
                )))
            }
        })
    }

    /// As written in a connection string.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Allow => "allow",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }

    /// What the connection library is told: whether TLS is tried, required.
    /// `allow` (plain first, TLS if the server insists) is tried as `prefer`.
    pub fn library_mode(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Allow | Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS settings of a connection, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub mode: Mode,
    /// The root certificate file (or `system`); the default one is used only
    /// if it exists. Empty: none (no home directory).
    pub rootcert: String,
    pub cert: String,
    pub key: String,
}

/// The connection-string keys this module owns.
pub const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Resolve from the values taken out of the connection string, the
/// environment (`var`) and the home directory.
pub fn resolve(
    from_connstr: &[(String, String)],
    var: &dyn Fn(&str) -> Option<String>,
    home: Option<String>,
) -> Result<Tls> {
    let pick = |key: &str, env: &str| {
        from_connstr
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| var(env))
    };
    // Without a home directory there are no default files (libpq looks in
    // the user's home only, never in the current directory).
    let default = |file: &str| {
        home.as_ref()
            .map_or_else(String::new, |h| format!("{h}/.postgresql/{file}"))
    };
    let rootcert = pick("sslrootcert", "PGSSLROOTCERT").unwrap_or_else(|| default("root.crt"));
    let mode = match (pick("sslmode", "PGSSLMODE"), rootcert.as_str()) {
        // As libpq 16: the system's trusted CAs only make sense with the
        // host name checked.
        (None, "system") => Mode::VerifyFull,
        (Some(m), "system") if m != "verify-full" => {
            return Err(Failure::usage(format!(
                "weak sslmode \"{m}\" may not be used with sslrootcert=system (use \"verify-full\")"
            )))
        }
        (m, _) => Mode::parse(m.as_deref().unwrap_or("prefer"))?,
    };
    Ok(Tls {
        mode,
        rootcert,
        cert: pick("sslcert", "PGSSLCERT").unwrap_or_else(|| default("postgresql.crt")),
        key: pick("sslkey", "PGSSLKEY").unwrap_or_else(|| default("postgresql.key")),
    })
}

/// Take the TLS keys out of a connection string (`key=value …` or a
/// `postgresql://` URI): the rest, for the connection library, and the
/// values taken out, in order.
pub fn split_connstr(s: &str) -> Result<(String, Vec<(String, String)>)> {
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        return Ok(split_uri(s));
    }
    let pairs = parse_keywords(s)?;
    if !pairs.iter().any(|(k, _)| KEYS.contains(&k.as_str())) {
        // Nothing of ours: the connection library reads it as it was written.
        return Ok((s.to_string(), vec![]));
    }
    let mut rest = Vec::new();
    let mut ours = Vec::new();
    for (k, v) in pairs {
        if KEYS.contains(&k.as_str()) {
            ours.push((k, v));
        } else {
            let quoted = v.replace('\\', "\\\\").replace('\'', "\\'");
            rest.push(format!("{k}='{quoted}'"));
        }
    }
    Ok((rest.join(" "), ours))
}

fn split_uri(s: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = s.split_once('?') else {
        return (s.to_string(), vec![]);
    };
    let mut rest = Vec::new();
    let mut ours = Vec::new();
    for p in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if KEYS.contains(&k) {
            ours.push((k.to_string(), percent_decode(v)));
        } else {
            rest.push(p.to_string());
        }
    }
    if rest.is_empty() {
        (base.to_string(), ours)
    } else {
        (format!("{base}?{}", rest.join("&")), ours)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libpq's `key = value` list: values bare (backslash escapes) or in
/// single quotes (`\'` and `\\` escapes).
pub fn parse_keywords(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(Failure::usage(format!(
                "invalid connection string: missing \"=\" after \"{key}\""
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(Failure::usage(
                            "invalid connection string: unterminated quoted value",
                        ))
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// Whether the server's certificate is checked against a root certificate.
pub fn verifies(t: &Tls, rootcert_exists: bool) -> bool {
    match t.mode {
        Mode::VerifyCa | Mode::VerifyFull => true,
        Mode::Require => rootcert_exists || t.rootcert == "system",
        _ => false,
    }
}

/// As libpq: a private key others may read is refused (0600 or less when
/// owned by the user, 0640 or less when owned by root).
fn check_key_permissions(key: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if let Ok(meta) = std::fs::metadata(key) {
            let mode = meta.permissions().mode();
            let loose = if meta.uid() == 0 {
                mode & 0o037
            } else {
                mode & 0o077
            };
            if loose != 0 {
                return Err(Failure::new(
                    crate::exit::code::CANNOT_CONNECT,
                    format!("private key file \"{key}\" has group or world access"),
                )
                .hint("The file must have permissions u=rw (0600) or less if owned by the current user, or u=rw,g=r (0640) or less if owned by root."));
            }
        }
    }
    Ok(())
}

/// The OpenSSL connector for `t` (None: no TLS at all).
pub fn connector(t: &Tls) -> Result<Option<postgres_openssl::MakeTlsConnector>> {
    use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
    if t.mode == Mode::Disable {
        return Ok(None);
    }
    let fail = |what: String| Failure::new(crate::exit::code::CANNOT_CONNECT, what);
    let ssl = |e: openssl::error::ErrorStack| fail(format!("could not set up TLS: {e}"));
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(ssl)?;
    let exists = |p: &str| std::path::Path::new(p).is_file();
    if verifies(t, exists(&t.rootcert)) {
        if t.rootcert == "system" {
            b.set_default_verify_paths().map_err(ssl)?;
        } else if exists(&t.rootcert) {
            // Only the certificates of this file: the builder starts with
            // the system's trusted CAs, which libpq does not trust here.
            let pem = std::fs::read(&t.rootcert).map_err(|e| {
                fail(format!(
                    "could not read root certificate file \"{}\": {e}",
                    t.rootcert
                ))
            })?;
            let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| {
                fail(format!(
                    "could not read root certificate file \"{}\": {e}",
                    t.rootcert
                ))
            })?;
            let mut store = openssl::x509::store::X509StoreBuilder::new().map_err(ssl)?;
            for c in certs {
                store.add_cert(c).map_err(ssl)?;
            }
            b.set_cert_store(store.build());
        } else {
            return Err(fail(format!(
                "root certificate file \"{}\" does not exist",
                t.rootcert
            ))
            .hint("Either provide the file (sslrootcert, PGSSLROOTCERT) or change sslmode to disable server certificate verification."));
        }
        b.set_verify(SslVerifyMode::PEER);
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    if exists(&t.cert) {
        check_key_permissions(&t.key)?;
        b.set_certificate_chain_file(&t.cert).map_err(|e| {
            fail(format!(
                "could not read certificate file \"{}\": {e}",
                t.cert
            ))
        })?;
        b.set_private_key_file(&t.key, SslFiletype::PEM)
            .map_err(|e| {
                fail(format!(
                    "could not read private key file \"{}\": {e}",
                    t.key
                ))
            })?;
    }
    let mut c = postgres_openssl::MakeTlsConnector::new(b.build());
    let full = t.mode == Mode::VerifyFull;
    c.set_callback(move |config, _host| {
        config.set_verify_hostname(full);
        Ok(())
    });
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn keyword_strings_lose_only_the_tls_keys() {
        let (rest, ours) = split_connstr(
            "host=db.example port = 5433 sslmode=verify-full sslrootcert='/etc/my ca.pem' dbname='a \\'b'",
        )
        .unwrap();
        assert_eq!(rest, "host='db.example' port='5433' dbname='a \\'b'");
        assert_eq!(
            ours,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/etc/my ca.pem".to_string())
            ]
        );
        assert!(split_connstr("host").is_err());
        assert!(split_connstr("host='x").is_err());
    }

    #[test]
    fn uris_lose_only_the_tls_parameters() {
        let (rest, ours) = split_connstr(
            "postgresql://u@h:5/db?sslmode=require&application_name=x&sslrootcert=%2Ftmp%2Fca.crt",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u@h:5/db?application_name=x");
        assert_eq!(ours[0], ("sslmode".into(), "require".into()));
        assert_eq!(ours[1], ("sslrootcert".into(), "/tmp/ca.crt".into()));
        let (rest, ours) = split_connstr("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!((rest.as_str(), ours.len()), ("postgres://h/db", 1));
    }

    #[test]
    fn the_connection_string_wins_over_the_environment_over_the_defaults() {
        let env = |n: &str| match n {
            "PGSSLMODE" => Some("require".to_string()),
            "PGSSLROOTCERT" => Some("/env/ca.crt".to_string()),
            _ => None,
        };
        let t = resolve(
            &[("sslmode".into(), "verify-ca".into())],
            &env,
            Some("/home/u".into()),
        )
        .unwrap();
        assert_eq!(t.mode, Mode::VerifyCa);
        assert_eq!(t.rootcert, "/env/ca.crt");
        assert_eq!(t.cert, "/home/u/.postgresql/postgresql.crt");
        let t = resolve(&[], &no_env, Some("/home/u".into())).unwrap();
        assert_eq!(t.mode, Mode::Prefer);
        assert_eq!(t.rootcert, "/home/u/.postgresql/root.crt");
        assert!(resolve(&[("sslmode".into(), "maybe".into())], &no_env, None).is_err());
        // sslrootcert=system means verify-full, and refuses weaker modes.
        let system = ("sslrootcert".to_string(), "system".to_string());
        let t = resolve(std::slice::from_ref(&system), &no_env, None).unwrap();
        assert_eq!(t.mode, Mode::VerifyFull);
        assert!(resolve(
            &[system, ("sslmode".into(), "require".into())],
            &no_env,
            None
        )
        .is_err());
        // No home directory: no default files.
        let t = resolve(&[], &no_env, None).unwrap();
        assert_eq!((t.rootcert.as_str(), t.cert.as_str()), ("", ""));
    }

    #[test]
    fn a_private_key_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("halo_key_{}", std::process::id()));
        std::fs::write(&path, "not a key").unwrap();
        let key = path.display().to_string();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_key_permissions(&key).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_key_permissions(&key).is_ok());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn require_verifies_only_when_a_root_certificate_exists() {
        let t = |mode| Tls {
            mode,
            rootcert: "/x".into(),
            cert: String::new(),
            key: String::new(),
        };
        assert!(!verifies(&t(Mode::Require), false));
        assert!(verifies(&t(Mode::Require), true));
        assert!(!verifies(&t(Mode::Prefer), true));
        assert!(verifies(&t(Mode::VerifyCa), false));
        assert_eq!(Mode::Allow.library_mode(), SslMode::Prefer);
        assert_eq!(Mode::VerifyFull.library_mode(), SslMode::Require);
    }
}
