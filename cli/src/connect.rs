//! Connecting like every PostgreSQL tool: `-h -p -U -d` (where `-d` may be a
//! connection string or URI), the `PG*` environment variables, `.pgpass`, and
//! `-W` to prompt for a password.
//!
//! Resolution is a pure function of the options, the environment and the
//! password file's text, so it is tested without a server. As in libpq, a
//! value in a connection string given to `-d` wins over `-h`, `-p` and `-U`;
//! anything still unset comes from `PGHOST`, `PGPORT`, `PGUSER`,
//! `PGDATABASE`, `PGPASSWORD`, then the defaults (the local socket directory,
//! 5432, the operating-system user, a database named after the user).
//! TLS settings (`sslmode`, …) are resolved the same way, in `tls.rs`.

use crate::exit::{code, Failure, Result};
use crate::tls::{self, Tls};
use postgres::config::Host;
use postgres::{Client, Config, NoTls};
use std::io::IsTerminal;
use std::str::FromStr;

/// The connection options as given on the command line.
#[derive(Debug, Default, Clone)]
pub struct ConnOpts {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub dbname: Option<String>,
    pub prompt_password: bool,
    pub no_password: bool,
}

/// Where a setting not given anywhere else comes from.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    /// The directory of the server's Unix socket, if there is one.
    fn socket_dir(&self) -> Option<String>;
    fn os_user(&self) -> Option<String>;
    fn pgpass(&self) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn socket_dir(&self) -> Option<String> {
        // Debian's libpq default; other builds use /tmp.
        ["/var/run/postgresql", "/tmp"]
            .into_iter()
            .find(|d| {
                std::fs::read_dir(d)
                    .map(|mut e| {
                        e.any(|f| {
                            f.map(|f| f.file_name().to_string_lossy().starts_with(".s.PGSQL."))
                                .unwrap_or(false)
                        })
                    })
                    .unwrap_or(false)
            })
            .map(str::to_string)
    }

    fn os_user(&self) -> Option<String> {
        self.var("USER")
            .or_else(|| self.var("LOGNAME"))
            .or_else(|| {
                let out = std::process::Command::new("id").arg("-un").output().ok()?;
                let name = String::from_utf8(out.stdout).ok()?.trim().to_string();
                (!name.is_empty()).then_some(name)
            })
    }

    fn pgpass(&self) -> Option<String> {
        let path = self
            .var("PGPASSFILE")
            .or_else(|| self.var("HOME").map(|h| format!("{h}/.pgpass")))?;
        let meta = std::fs::metadata(&path).ok()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // libpq ignores a password file others can read; so do we.
            if meta.permissions().mode() & 0o077 != 0 {
                eprintln!(
                    "halo_migrate: warning: password file \"{path}\" has group or world access; permissions should be u=rw (0600) or less"
                );
                return None;
            }
        }
        let _ = meta;
        std::fs::read_to_string(path).ok()
    }
}

fn looks_like_connstr(s: &str) -> bool {
    s.contains('=') || s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The connection settings, everything but a prompted password resolved.
pub fn resolve(opts: &ConnOpts, env: &dyn Env) -> Result<Config> {
    let mut cfg = match &opts.dbname {
        Some(d) if looks_like_connstr(d) => {
            let (rest, _) = tls::split_connstr(d)?;
            Config::from_str(&rest)
                .map_err(|e| Failure::usage(format!("invalid connection string \"{d}\": {e}")))?
        }
        _ => Config::new(),
    };
    // With hostaddr alone the address is the host (libpq): no default.
    if cfg.get_hosts().is_empty() && cfg.get_hostaddrs().is_empty() {
        let host = opts
            .host
            .clone()
            .or_else(|| env.var("PGHOST"))
            .or_else(|| env.socket_dir())
            .unwrap_or_else(|| "localhost".into());
        // Several hosts, comma-separated, are tried in turn (as in libpq).
        for h in host.split(',').filter(|h| !h.is_empty()) {
            cfg.host(h);
        }
    }
    if cfg.get_ports().is_empty() {
        match opts.port {
            Some(p) => {
                cfg.port(p);
            }
            None => {
                match env.var("PGPORT") {
                    Some(list) => {
                        for p in list.split(',') {
                            cfg.port(p.trim().parse().map_err(|_| {
                                Failure::usage(format!("invalid PGPORT \"{list}\""))
                            })?);
                        }
                    }
                    None => {
                        cfg.port(5432);
                    }
                }
            }
        }
    }
    if !connstr_has(opts, "target_session_attrs") {
        if let Some(v) = env.var("PGTARGETSESSIONATTRS") {
            let parsed = Config::from_str(&format!("target_session_attrs={v}")).map_err(|_| {
                Failure::usage(format!(
                    "invalid PGTARGETSESSIONATTRS \"{v}\" (any, read-write or read-only)"
                ))
            })?;
            cfg.target_session_attrs(parsed.get_target_session_attrs());
        }
    }
    if cfg.get_user().is_none() {
        let user = opts
            .username
            .clone()
            .or_else(|| env.var("PGUSER"))
            .or_else(|| env.os_user())
            .ok_or_else(|| Failure::usage("no user name: give -U or set PGUSER"))?;
        cfg.user(&user);
    }
    if cfg.get_dbname().is_none() {
        let db = match &opts.dbname {
            Some(d) if !looks_like_connstr(d) => d.clone(),
            _ => env
                .var("PGDATABASE")
                .unwrap_or_else(|| cfg.get_user().unwrap_or_default().to_string()),
        };
        cfg.dbname(&db);
    }
    if cfg.get_password().is_none() && !opts.prompt_password {
        let from_file = || {
            let (host, port) = first_host(&cfg);
            let text = env.pgpass()?;
            pgpass_lookup(
                &text,
                &host,
                port,
                cfg.get_dbname().unwrap_or_default(),
                cfg.get_user().unwrap_or_default(),
            )
        };
        if let Some(pw) = env.var("PGPASSWORD").or_else(from_file) {
            cfg.password(pw);
        }
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("halo_migrate");
    }
    Ok(cfg)
}

/// Does the connection string given to `-d` set `key`?
fn connstr_has(opts: &ConnOpts, key: &str) -> bool {
    match opts.dbname.as_deref() {
        Some(d) if d.starts_with("postgres://") || d.starts_with("postgresql://") => d
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|p| p.split('=').next() == Some(key))),
        Some(d) if looks_like_connstr(d) => {
            tls::parse_keywords(d).is_ok_and(|kv| kv.iter().any(|(k, _)| k == key))
        }
        _ => false,
    }
}

/// The TLS settings: the connection string's, else `PGSSL*`, else libpq's defaults.
pub fn resolve_tls(opts: &ConnOpts, env: &dyn Env) -> Result<Tls> {
    let from_connstr = match &opts.dbname {
        Some(d) if looks_like_connstr(d) => tls::split_connstr(d)?.1,
        _ => vec![],
    };
    tls::resolve(&from_connstr, &|n| env.var(n), env.var("HOME"))
}

/// Where and how to connect: the settings, their TLS, and its connector
/// (None: no TLS).
pub struct Target {
    pub cfg: Config,
    pub tls: Tls,
    connector: Option<postgres_openssl::MakeTlsConnector>,
}

/// Open a session to `t`. A Unix-domain socket never uses TLS (as in
/// libpq): only sockets, no TLS; only TCP (or hostaddr), TLS as asked;
/// both, refused when TLS is required (a socket could not provide it), and
/// tried as `prefer` otherwise (the server declines TLS on a socket).
fn open(t: &Target) -> Result<std::result::Result<Client, postgres::Error>> {
    let hosts = t.cfg.get_hosts();
    let sockets = hosts.iter().any(|h| !matches!(h, Host::Tcp(_)));
    // hostaddr alone is a TCP address
    let tcp = hosts.iter().any(|h| matches!(h, Host::Tcp(_)))
        || (hosts.is_empty() && !t.cfg.get_hostaddrs().is_empty());
    let mut cfg = t.cfg.clone();
    match &t.connector {
        Some(c) if tcp => {
            if sockets && t.tls.mode.library_mode() == postgres::config::SslMode::Require {
                return Err(Failure::usage(format!(
                    "sslmode={} needs TLS, which a Unix-domain socket cannot give: list only TCP hosts",
                    t.tls.mode.name()
                )));
            }
            cfg.ssl_mode(t.tls.mode.library_mode());
            Ok(cfg.connect(c.clone()))
        }
        _ => {
            cfg.ssl_mode(postgres::config::SslMode::Disable);
            Ok(cfg.connect(NoTls))
        }
    }
}

/// The host as `.pgpass` names it: a socket directory counts as `localhost`.
fn first_host(cfg: &Config) -> (String, u16) {
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(_)) => "localhost".into(),
        None => "localhost".into(),
    };
    (host, cfg.get_ports().first().copied().unwrap_or(5432))
}

/// The password of the first `.pgpass` line that matches, as libpq reads
/// the file: `host:port:db:user:password`, `*` matches anything, `\` escapes
/// `:` and `\`, lines starting with `#` are comments.
pub fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(split_pgpass_line)
        .find(|f| {
            let ok = |field: &str, want: &str| field == "*" || field == want;
            ok(&f[0], host) && ok(&f[1], &port) && ok(&f[2], db) && ok(&f[3], user)
        })
        .map(|f| f[4].clone())
}

fn split_pgpass_line(line: &str) -> Option<[String; 5]> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

/// Connect; prompt for a password when `-W` was given, or when the server
/// asks for one and we are on a terminal (unless `-w`). The target comes
/// back too, to open a second session with it.
pub fn connect(opts: &ConnOpts) -> Result<(Client, Target)> {
    let mut cfg = resolve(opts, &ProcessEnv)?;
    let tls = resolve_tls(opts, &ProcessEnv)?;
    // A missing or bad certificate file is reported as itself, before any
    // connection is tried.
    let connector = tls::connector(&tls)?;
    if opts.prompt_password {
        cfg.password(prompt(&cfg)?);
    }
    let mut target = Target {
        cfg,
        tls,
        connector,
    };
    let client = match open(&target)? {
        Ok(c) => c,
        Err(e)
            if target.cfg.get_password().is_none()
                && !opts.no_password
                && std::io::stdin().is_terminal()
                && e.to_string().contains("password missing") =>
        {
            let pw = prompt(&target.cfg)?;
            target.cfg.password(pw);
            open(&target)?.map_err(|e| cannot_connect(&target.cfg, &e))?
        }
        Err(e) => return Err(cannot_connect(&target.cfg, &e)),
    };
    Ok((client, target))
}

/// A second session to the same target (the progress display watches
/// through it while the first one waits in `migrate.finish()`).
pub fn connect_again(t: &Target) -> Result<Client> {
    open(t)?.map_err(|e| cannot_connect(&t.cfg, &e))
}

fn prompt(cfg: &Config) -> Result<String> {
    rpassword::prompt_password(format!(
        "Password for user {}: ",
        cfg.get_user().unwrap_or_default()
    ))
    .map_err(|e| {
        Failure::new(
            code::CANNOT_CONNECT,
            format!("cannot read the password: {e}"),
        )
    })
}

/// Where we tried to connect, for the error message.
pub fn describe(cfg: &Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => format!("host \"{h}\""),
        #[cfg(unix)]
        Some(Host::Unix(p)) => format!("socket in \"{}\"", p.display()),
        None => "an unknown host".into(),
    };
    format!(
        "{host}, port {}, database \"{}\", user \"{}\"",
        cfg.get_ports().first().copied().unwrap_or(5432),
        cfg.get_dbname().unwrap_or_default(),
        cfg.get_user().unwrap_or_default()
    )
}

fn cannot_connect(cfg: &Config, e: &postgres::Error) -> Failure {
    let mut f = Failure::new(
        code::CANNOT_CONNECT,
        format!("cannot connect to {}: {}", describe(cfg), db_text(e)),
    );
    f.hint = Some(
        "Check -h/-p/-U/-d (or PGHOST, PGPORT, PGUSER, PGDATABASE), that the server is running, the password (-W, PGPASSWORD or ~/.pgpass), and the TLS settings (sslmode, sslrootcert in -d, or PGSSLMODE, PGSSLROOTCERT).".into(),
    );
    f
}

fn db_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        // "error connecting to server: Connection refused (os error 111)"
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv {
        vars: HashMap<&'static str, &'static str>,
        socket: Option<&'static str>,
        pgpass: Option<&'static str>,
    }

    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).map(|v| v.to_string())
        }
        fn socket_dir(&self) -> Option<String> {
            self.socket.map(str::to_string)
        }
        fn os_user(&self) -> Option<String> {
            Some("osuser".into())
        }
        fn pgpass(&self) -> Option<String> {
            self.pgpass.map(str::to_string)
        }
    }

    fn env(vars: &[(&'static str, &'static str)]) -> FakeEnv {
        FakeEnv {
            vars: vars.iter().copied().collect(),
            socket: None,
            pgpass: None,
        }
    }

    fn tcp(cfg: &Config) -> String {
        match &cfg.get_hosts()[0] {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        }
    }

    #[test]
    fn several_hosts_and_the_session_they_must_give() {
        let e = env(&[
            ("PGHOST", "db1,db2"),
            ("PGPORT", "5432,5433"),
            ("PGTARGETSESSIONATTRS", "read-write"),
        ]);
        let cfg = resolve(&ConnOpts::default(), &e).unwrap();
        assert_eq!(cfg.get_hosts().len(), 2);
        assert_eq!(cfg.get_ports(), &[5432, 5433]);
        assert_eq!(
            cfg.get_target_session_attrs(),
            postgres::config::TargetSessionAttrs::ReadWrite
        );
        let e = env(&[("PGTARGETSESSIONATTRS", "primary-ish")]);
        assert!(resolve(&ConnOpts::default(), &e).is_err());
        // The connection string's setting wins.
        let opts = ConnOpts {
            dbname: Some("host=a,b target_session_attrs=any".into()),
            ..ConnOpts::default()
        };
        let e = env(&[("PGTARGETSESSIONATTRS", "read-write")]);
        let cfg = resolve(&opts, &e).unwrap();
        assert_eq!(cfg.get_hosts().len(), 2);
        assert_eq!(
            cfg.get_target_session_attrs(),
            postgres::config::TargetSessionAttrs::Any
        );
    }

    #[test]
    fn defaults_are_libpqs() {
        let cfg = resolve(&ConnOpts::default(), &env(&[])).unwrap();
        assert_eq!(tcp(&cfg), "localhost");
        assert_eq!(cfg.get_ports(), &[5432]);
        assert_eq!(cfg.get_user(), Some("osuser"));
        assert_eq!(cfg.get_dbname(), Some("osuser"));
        assert_eq!(cfg.get_application_name(), Some("halo_migrate"));
        let mut e = env(&[]);
        e.socket = Some("/var/run/postgresql");
        let cfg = resolve(&ConnOpts::default(), &e).unwrap();
        assert_eq!(tcp(&cfg), "/var/run/postgresql");
    }

    #[test]
    fn environment_then_options() {
        let e = env(&[
            ("PGHOST", "db.example"),
            ("PGPORT", "6543"),
            ("PGUSER", "alice"),
            ("PGDATABASE", "shop"),
            ("PGPASSWORD", "s3cret"),
        ]);
        let cfg = resolve(&ConnOpts::default(), &e).unwrap();
        assert_eq!(tcp(&cfg), "db.example");
        assert_eq!(cfg.get_ports(), &[6543]);
        assert_eq!(cfg.get_user(), Some("alice"));
        assert_eq!(cfg.get_dbname(), Some("shop"));
        assert_eq!(cfg.get_password(), Some(&b"s3cret"[..]));
        let opts = ConnOpts {
            host: Some("other".into()),
            port: Some(7000),
            username: Some("bob".into()),
            dbname: Some("crm".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts, &e).unwrap();
        assert_eq!(tcp(&cfg), "other");
        assert_eq!(cfg.get_ports(), &[7000]);
        assert_eq!(cfg.get_user(), Some("bob"));
        assert_eq!(cfg.get_dbname(), Some("crm"));
        assert!(resolve(&ConnOpts::default(), &env(&[("PGPORT", "x")])).is_err());
    }

    #[test]
    fn connection_strings_and_uris() {
        let opts = ConnOpts {
            dbname: Some("host=h1 port=6000 dbname=app user=carol".into()),
            host: Some("ignored".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts, &env(&[])).unwrap();
        assert_eq!(tcp(&cfg), "h1");
        assert_eq!(cfg.get_ports(), &[6000]);
        assert_eq!(
            (cfg.get_user(), cfg.get_dbname()),
            (Some("carol"), Some("app"))
        );
        let opts = ConnOpts {
            dbname: Some("postgresql://dave@h2:6001/books".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts, &env(&[])).unwrap();
        assert_eq!(tcp(&cfg), "h2");
        assert_eq!(cfg.get_ports(), &[6001]);
        assert_eq!(
            (cfg.get_user(), cfg.get_dbname()),
            (Some("dave"), Some("books"))
        );
        // Unset parts still come from options and the environment.
        let opts = ConnOpts {
            dbname: Some("dbname=app".into()),
            username: Some("erin".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts, &env(&[("PGPORT", "6002")])).unwrap();
        assert_eq!(cfg.get_ports(), &[6002]);
        assert_eq!(cfg.get_user(), Some("erin"));
        assert!(resolve(
            &ConnOpts {
                dbname: Some("host=".into()),
                ..Default::default()
            },
            &env(&[])
        )
        .is_err_and(|f| f.code == code::USAGE));
    }

    #[test]
    fn pgpass_matching() {
        let file = "# comment\n\
                    other:5432:*:alice:wrong\n\
                    db\\:x:*:shop:alice:with\\:colon\n\
                    *:5432:*:alice:right\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(file, "h", 5432, "shop", "alice").as_deref(),
            Some("right")
        );
        assert_eq!(
            pgpass_lookup(file, "db:x", 1, "shop", "alice").as_deref(),
            Some("with:colon")
        );
        assert_eq!(
            pgpass_lookup(file, "h", 6000, "shop", "alice").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("h:1:d:u", "h", 1, "d", "u"), None);
        // The password field may itself hold colons only when escaped, but
        // anything after the fifth field belongs to it.
        assert_eq!(
            pgpass_lookup("*:*:*:*:a:b", "h", 1, "d", "u").as_deref(),
            Some("a:b")
        );
    }

    #[test]
    fn pgpass_is_used_with_socket_as_localhost() {
        let mut e = env(&[]);
        e.socket = Some("/var/run/postgresql");
        e.pgpass = Some("localhost:5432:osuser:osuser:pw\n");
        let cfg = resolve(&ConnOpts::default(), &e).unwrap();
        assert_eq!(cfg.get_password(), Some(&b"pw"[..]));
        // PGPASSWORD wins over the file; -W skips both (it prompts).
        e.vars.insert("PGPASSWORD", "env");
        let cfg = resolve(&ConnOpts::default(), &e).unwrap();
        assert_eq!(cfg.get_password(), Some(&b"env"[..]));
        let opts = ConnOpts {
            prompt_password: true,
            ..Default::default()
        };
        assert_eq!(resolve(&opts, &e).unwrap().get_password(), None);
    }
}
