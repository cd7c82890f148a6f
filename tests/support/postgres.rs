//! A PostgreSQL server for the tests that run against the PostgreSQL store, and a fresh
//! database per test.
//!
//! Where the server comes from, in order:
//! 1. `RUNWARDEN_TEST_POSTGRES_URL` (what `.ci/run` exports): a server URL whose user may
//!    create databases, e.g. `postgres://postgres@127.0.0.1:55432/postgres`.
//! 2. Otherwise, when the PostgreSQL server binaries are installed (`initdb` and `pg_ctl`
//!    on `PATH` or in `/usr/lib/postgresql/<version>/bin`): a throwaway cluster in a temp
//!    directory on a free loopback port, started once per test binary and stopped (and
//!    deleted) by a watchdog when the test process exits.
//! 3. Otherwise the test fails with a message telling how to get one. The PostgreSQL
//!    tests never skip: CI (`CI=true`) and a developer without PostgreSQL both see them.
//!
//! Each [`fresh_database`] is a new `test_<uuid>` database on that server, never reused.
//!
//! The end-to-end harnesses (`tests/common/mod.rs`, `tests/support/child.rs`) run on
//! SQLite by default; with `RUNWARDEN_TEST_STORE=postgres` ([`selected`]) every bot they
//! start gets a fresh database here instead, so a whole test binary runs on PostgreSQL
//! (`.ci/run` does that pass after `cargo test`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::Connection as _;

/// The variable naming an existing server.
pub const URL_VAR: &str = "RUNWARDEN_TEST_POSTGRES_URL";

/// The variable selecting the store of the end-to-end harnesses: `postgres`, or
/// `sqlite` (the default, also when unset or empty).
pub const STORE_VAR: &str = "RUNWARDEN_TEST_STORE";

/// Whether the end-to-end harnesses run their bots on PostgreSQL
/// (`RUNWARDEN_TEST_STORE=postgres`). Any value other than `postgres`, `sqlite` or empty
/// panics, so that a typo cannot quietly run the suite on SQLite.
pub fn selected() -> bool {
    match std::env::var(STORE_VAR) {
        Err(std::env::VarError::NotPresent) => false,
        Err(e) => panic!("{STORE_VAR}: {e}"),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "sqlite" => false,
            "postgres" | "postgresql" => true,
            other => panic!("{STORE_VAR}={other:?}: expected `postgres` or `sqlite`"),
        },
    }
}

/// A fresh database when [`selected`], else `None` (the harness's SQLite file).
pub async fn selected_database() -> Option<String> {
    if selected() {
        Some(fresh_database().await)
    } else {
        None
    }
}

/// The server URL (without a database, or with the admin database), starting a throwaway
/// cluster when needed. Panics with instructions when there is no way to get a server.
pub fn server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var(URL_VAR)
            && !url.trim().is_empty()
        {
            return url.trim().to_string();
        }
        match find_bin_dir() {
            Some(bin) => start_throwaway_cluster(&bin),
            None => panic!(
                "the PostgreSQL store tests need a PostgreSQL server, and none was found \
                 (CI={ci:?}). Either set {URL_VAR}=postgres://USER@127.0.0.1:PORT/postgres \
                 to a server whose user may CREATE DATABASE (e.g. `docker run -d -p 55432:5432 \
                 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16` and \
                 {URL_VAR}=postgres://postgres@127.0.0.1:55432/postgres), or install the \
                 server binaries (`apt-get install postgresql`, `brew install postgresql`) so \
                 that the tests start a throwaway cluster themselves. `.ci/run` does the \
                 latter for CI.",
                ci = std::env::var("CI").unwrap_or_default(),
            ),
        }
    })
    .clone()
}

/// A new, empty database on the test server; returns its URL.
pub async fn fresh_database() -> String {
    let server = server_url();
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = connect_admin(&server).await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name} on the test server: {e}"));
    let _ = conn.close().await;
    with_database(&server, &name)
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("a PostgreSQL URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

async fn connect_admin(server: &str) -> sqlx::PgConnection {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match sqlx::PgConnection::connect(server).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot connect to the test PostgreSQL server: {e}"),
        }
    }
}

/// The directory of `initdb` and `pg_ctl`, if installed.
fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse(); // the newest version first
    on_path
        .into_iter()
        .chain(debian)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// Starts a cluster in a temp dir on a free loopback port (as `postgres` when running as
/// root: the server refuses root) and a watchdog that stops it when this process exits.
fn start_throwaway_cluster(bin: &Path) -> String {
    let dir = tempfile::Builder::new()
        .prefix("runwarden-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let root = unsafe { libc::geteuid() } == 0;
    let as_server_user = |program: &Path| {
        let mut c = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        c.current_dir("/");
        c
    };
    if root {
        let ok = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot chown {} to postgres", dir.display());
    }
    let data = dir.join("data");
    let out = as_server_user(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "--no-sync"])
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opts = format!(
        "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400",
        dir.display()
    );
    let out = as_server_user(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-o", &opts, "-w", "start"])
        .output()
        .expect("run pg_ctl");
    assert!(
        out.status.success(),
        "pg_ctl start failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The watchdog: stop the server and delete the cluster once this process is gone.
    let stop = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {run}{pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        run = if root { "runuser -u postgres -- " } else { "" },
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    // `setsid -f`: in its own session, detached (it outlives this process), and waited
    // for here only until it has forked.
    let started = Command::new("setsid")
        .args(["-f", "sh", "-c", &stop])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(started, "cannot start the PostgreSQL watchdog (setsid)");
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}
