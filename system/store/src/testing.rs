//! PostgreSQL for tests: a fresh, migrated database per test.
//!
//! When `DATABASE_URL` is set, test databases are created on that server (and dropped when the
//! test ends). Otherwise the first test in a process starts a throwaway cluster with the local
//! `initdb` and `postgres` binaries in a temporary directory (as the `postgres` user when run
//! as root, since PostgreSQL refuses to run as root), which dies with the test process. Tests
//! therefore never depend on a server being installed and running on the machine.

use crate::postgres::{PgBackend, PgSettings};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A migrated database that exists for the lifetime of this value.
pub struct TestDatabase {
    /// Connection URL of the database.
    pub url: String,
    admin_url: String,
    name: String,
    drop_on_exit: bool,
}

static CLUSTER: OnceLock<Result<String, String>> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDatabase {
    /// Creates and migrates a new database. Fails with a readable message when no PostgreSQL
    /// can be found or started.
    pub async fn create() -> Result<TestDatabase, String> {
        TestDatabase::create_migrated_to(None).await
    }

    /// Creates a new database migrated up to migration `last` (every migration when `None`):
    /// the schema an older version left, for tests of what a later migration does to its data.
    pub async fn create_migrated_to(last: Option<i64>) -> Result<TestDatabase, String> {
        let (admin_url, drop_on_exit) = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => (url, true),
            _ => (CLUSTER.get_or_init(start_cluster).clone()?, false),
        };
        let name = format!(
            "paytest_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            nanos_suffix()
        );
        let admin_opts = PgConnectOptions::from_str(&admin_url).map_err(|e| format!("bad DATABASE_URL: {e}"))?;
        let mut admin = admin_opts
            .connect()
            .await
            .map_err(|e| format!("cannot connect to the test PostgreSQL server: {e}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("CREATE DATABASE failed: {e}"))?;
        let _ = admin.close().await;
        let url = admin_opts.clone().database(&name).to_url_lossy().to_string();
        let db = TestDatabase {
            url,
            admin_url,
            name,
            drop_on_exit,
        };
        let backend = db.backend().await?;
        match last {
            None => backend.migrate().await.map_err(|e| format!("migrations failed: {e}"))?,
            Some(last) => {
                use sqlx::migrate::Migrate;
                let mut conn = backend.pool().acquire().await.map_err(|e| e.to_string())?;
                conn.ensure_migrations_table().await.map_err(|e| e.to_string())?;
                for m in crate::postgres::MIGRATOR.iter().filter(|m| m.version <= last) {
                    conn.apply(m)
                        .await
                        .map_err(|e| format!("migration {} failed: {e}", m.version))?;
                }
            }
        }
        backend.pool().close().await;
        Ok(db)
    }

    /// A backend connected to this database.
    pub async fn backend(&self) -> Result<PgBackend, String> {
        PgBackend::connect(
            &self.url,
            &PgSettings {
                max_connections: 8,
                ..PgSettings::default()
            },
        )
        .await
        .map_err(|e| e.to_string())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.drop_on_exit {
            return; // The throwaway cluster disappears with the process.
        }
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop is synchronous and may run inside a runtime: use a private thread and runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async {
                    if let Ok(opts) = PgConnectOptions::from_str(&admin_url) {
                        if let Ok(mut c) = opts.connect().await {
                            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                        }
                    }
                });
            }
        })
        .join();
    }
}

fn nanos_suffix() -> u32 {
    // Only to keep names unique across processes sharing one DATABASE_URL server.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Locates the PostgreSQL server binaries.
pub fn pg_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("postgres").exists() && p.join("initdb").exists() {
            return Some(p);
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    candidates
        .into_iter()
        .rev()
        .find(|p| p.join("postgres").exists() && p.join("initdb").exists())
}

fn postgres_ids() -> Option<(u32, u32)> {
    let out = Command::new("id").arg("-u").arg("postgres").output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").arg("-g").arg("postgres").output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Removes clusters left behind by test processes that no longer exist.
fn sweep_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("pay-pg-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Starts the throwaway cluster on a dedicated thread that lives as long as the process (the
/// server is told to exit when that thread's process dies) and returns the admin URL.
fn start_cluster() -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("test-postgres".into())
        .spawn(move || {
            let result = run_cluster();
            let ok = result.is_ok();
            let _ = tx.send(result.map(|(url, _child)| url));
            if ok {
                // Keep this thread (the server's parent) alive until the process exits.
                loop {
                    std::thread::park();
                }
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv_timeout(Duration::from_secs(90))
        .map_err(|_| "test PostgreSQL did not start within 90 s".to_owned())?
}

fn run_cluster() -> Result<(String, std::process::Child), String> {
    use std::os::unix::process::CommandExt;
    let bindir = pg_bindir().ok_or(
        "PostgreSQL server binaries (initdb, postgres) not found: install the postgresql package or set DATABASE_URL",
    )?;
    let tmp = std::env::temp_dir();
    sweep_stale(&tmp);
    let dir = tmp.join(format!("pay-pg-{}-{}", std::process::id(), nanos_suffix()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let ids = if as_root {
        Some(postgres_ids().ok_or("running as root but there is no `postgres` user to run the test server")?)
    } else {
        None
    };
    if let Some((uid, gid)) = ids {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: chown on a path we just created, with a valid C string.
        if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
            return Err(format!("cannot chown {} to postgres", dir.display()));
        }
    }
    let data = dir.join("data");
    let mut initdb = Command::new(bindir.join("initdb"));
    initdb
        .args(["-D"])
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = ids {
        initdb.uid(uid).gid(gid);
    }
    let out = initdb.output().map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let port = free_port()?;
    let mut pg = Command::new(bindir.join("postgres"));
    pg.arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
        .args(["-c", "max_connections=300", "-c", "shared_buffers=64MB"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = ids {
        pg.uid(uid).gid(gid);
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; it makes the server shut down
    // immediately when the thread that started it (alive until process exit) goes away.
    unsafe {
        pg.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
    let child = pg.spawn().map_err(|e| format!("cannot start postgres: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("test PostgreSQL did not accept connections within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Accepting TCP does not mean accepting logins yet: wait for a real connection.
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        loop {
            match PgConnectOptions::from_str(&url)
                .map_err(|e| e.to_string())?
                .connect()
                .await
            {
                Ok(c) => {
                    let _ = c.close().await;
                    return Ok::<(), String>(());
                }
                Err(e) if Instant::now() > deadline => return Err(format!("test PostgreSQL refused logins: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })?;
    Ok((url, child))
}
