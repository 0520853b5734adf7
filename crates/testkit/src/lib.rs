//! Test support: a fresh PostgreSQL database per test.
//!
//! The server is the one named by `CART_TEST_DATABASE_URL` (any database on
//! it; `scripts/test` starts a throwaway one and sets it). Without it, the
//! first test that asks starts a throwaway server itself from the installed
//! PostgreSQL binaries (initdb in a temporary directory, a free port), which
//! dies with the test process. No test depends on a server started by hand.
//!
//! [`certs`] makes certificate authorities and node certificates at test
//! time (none are committed).

pub mod certs;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The environment variable naming an existing server.
pub const URL_VAR: &str = "CART_TEST_DATABASE_URL";

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// A new, empty database; returns its URL.
pub async fn fresh_database() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let server = server_url();
    let name = format!(
        "cart_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let admin = with_database(&server, "postgres");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (client, connection) = loop {
        match tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
            Ok(c) => break c,
            // A starting server accepts connections before it takes queries.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("cannot connect to the test PostgreSQL at {server}: {e}"),
        }
    };
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
    with_database(&server, &name)
}

/// The test server's URL, starting a throwaway server if none is named.
pub fn server_url() -> String {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => Ok(url),
            _ => start_throwaway_server(),
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| no_postgres())?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().ok_or_else(no_postgres)
}

fn no_postgres() -> String {
    format!(
        "PostgreSQL is needed for these tests: run scripts/test (it installs and starts one), \
         install the Debian package postgresql, or set {URL_VAR}"
    )
}

/// The uid and gid to run PostgreSQL as: `postgres` when we are root (it
/// refuses to run as root), else ourselves.
fn account() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn as_account(cmd: &mut Command, account: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = account {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn start_throwaway_server() -> Result<String, String> {
    let server = PgServer::start()?;
    let url = server.url.clone();
    // The shared server lives as long as the test process.
    std::mem::forget(server);
    Ok(url)
}

/// A throwaway PostgreSQL server of this test process: its own data
/// directory and port; killed when the process exits. Tests of outages stop
/// and restart it.
pub struct PgServer {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
    /// Its port.
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    account: Option<(u32, u32)>,
    pid: Option<u32>,
    tls: bool,
    listen: String,
}

/// How a [`PgServer`] is set up beyond the defaults (trust, plaintext).
#[derive(Default)]
pub struct PgSetup<'a> {
    /// Serve TLS only, with a certificate from this CA for `localhost` and
    /// `127.0.0.1` (plaintext connections are rejected).
    pub tls: Option<&'a certs::TestCa>,
    /// Require this password (SCRAM) of user `postgres` over TCP.
    pub password: Option<&'a str>,
    /// Listen on this address too (say a bridge that network namespaces
    /// reach), accepting connections from anywhere (plaintext only).
    pub listen: Option<&'a str>,
}

impl PgServer {
    /// initdb in a temporary directory and start on a free port.
    pub fn start() -> Result<PgServer, String> {
        Self::start_with(PgSetup::default())
    }

    /// Like [`PgServer::start`], set up as `setup` says.
    pub fn start_with(setup: PgSetup<'_>) -> Result<PgServer, String> {
        remove_stale_dirs();
        static N: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir()?;
        let account = account();
        let dir = std::env::temp_dir().join(format!(
            "cart-test-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if let Some((uid, gid)) = account {
            chown(&dir, uid, gid)?;
        }
        let mut initdb = Command::new(bin.join("initdb"));
        let initdb = as_account(&mut initdb, account);
        initdb.args(["-U", "postgres", "--no-sync", "-D"]).arg(dir.join("data"));
        match setup.password {
            Some(password) => {
                let file = dir.join("pwfile");
                std::fs::write(&file, password).map_err(|e| format!("pwfile: {e}"))?;
                if let Some((uid, gid)) = account {
                    chown(&file, uid, gid)?;
                }
                initdb.arg(format!("--pwfile={}", file.display()));
                initdb.args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
            }
            None => {
                initdb.args(["-A", "trust"]);
            }
        }
        let status = initdb.output().map_err(|e| format!("initdb failed to start: {e}"))?;
        if !status.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&status.stderr)));
        }
        if setup.listen.is_some() && setup.tls.is_none() {
            let auth = if setup.password.is_some() { "scram-sha-256" } else { "trust" };
            let hba = dir.join("data").join("pg_hba.conf");
            let mut rules = std::fs::read_to_string(&hba).map_err(|e| format!("pg_hba: {e}"))?;
            rules.push_str(&format!("host all all 0.0.0.0/0 {auth}\n"));
            std::fs::write(&hba, rules).map_err(|e| format!("pg_hba: {e}"))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        if let Some(ca) = setup.tls {
            let data = dir.join("data");
            let (cert, key) = ca.issue_for(&["localhost", "127.0.0.1"]);
            let auth = if setup.password.is_some() { "scram-sha-256" } else { "trust" };
            let hba = format!(
                "local all all trust\nhostssl all all 127.0.0.1/32 {auth}\nhostnossl all all 127.0.0.1/32 reject\n"
            );
            for (name, contents) in
                [("server.crt", cert), ("server.key", key), ("pg_hba.conf", hba)]
            {
                let path = data.join(name);
                std::fs::write(&path, contents).map_err(|e| format!("{name}: {e}"))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("{name}: {e}"))?;
                if let Some((uid, gid)) = account {
                    chown(&path, uid, gid)?;
                }
            }
        }
        let mut server = PgServer {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            bin,
            dir,
            account,
            pid: None,
            tls: setup.tls.is_some(),
            listen: match setup.listen {
                Some(extra) => format!("127.0.0.1,{extra}"),
                None => "127.0.0.1".into(),
            },
        };
        server.resume()?;
        Ok(server)
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn resume(&mut self) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (postgres, data_dir, socket_dir, port, account, tls) = (
            self.bin.join("postgres"),
            self.dir.join("data"),
            self.dir.clone(),
            self.port,
            self.account,
            self.tls,
        );
        let listen = format!("listen_addresses={}", self.listen);
        // Spawned from a thread that lives until the server exits, with
        // PR_SET_PDEATHSIG, so the server dies with the tests.
        std::thread::spawn(move || {
            let mut cmd = Command::new(postgres);
            as_account(&mut cmd, account)
                .arg("-D")
                .arg(&data_dir)
                .args(["-p", &port.to_string(), "-c", &listen, "-c", "max_connections=300"])
                .args(if tls { &["-c", "ssl=on"][..] } else { &[][..] })
                .arg("-k")
                .arg(&socket_dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            // SAFETY: prctl is async-signal-safe and only affects the child.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("postgres failed to start: {e}")));
                }
            }
        });
        self.pid = Some(rx.recv().map_err(|_| "postgres launcher died".to_string())??);
        // The port opens before the server takes sessions ("the database
        // system is starting up"); pg_isready waits for the latter.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.accepts_sessions() {
            if Instant::now() > deadline {
                return Err("the throwaway PostgreSQL did not start within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn accepts_sessions(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the server (fast shutdown) and waits until its port is closed.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: kill(2) on the postmaster we started.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::path::Path::new(&format!("/proc/{pid}")).exists()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes data directories left by earlier test processes that are gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("cart-test-pg-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(with_database("postgres://u@h:5/postgres", "x"), "postgres://u@h:5/x");
        assert_eq!(
            with_database("postgres://u@h:5/db?sslmode=disable", "x"),
            "postgres://u@h:5/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
    }
}
