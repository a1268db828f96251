//! The command-line client (`amo-storage key …`, `amo-storage parcel …`),
//! run as a subprocess of the built binary against a service started in this
//! process.
//!
//! One service serves every test of this module; each test uses its own
//! accounts and files. It runs on the suite's backend pair, like every API
//! test.

use std::{
    ffi::OsStr,
    io::{Read, Write},
    path::Path,
    process::{Command, Output},
    sync::{OnceLock, mpsc},
    time::{Duration, Instant},
};

use amo_storage::{app::App, config::Settings};
use rand::RngCore;
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------
// The service

/// The settings of the service under test: this suite's backend pair
/// (real or embedded, see `helpers`), under a fresh key prefix or data
/// directory.
fn backend_settings() -> Settings {
    crate::helpers::settings(&[])
}

/// The base URL of the running service, started on first use on its own
/// runtime thread, and ready (`/readyz` answered 200).
fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let (started, endpoint) = mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("the service's runtime");
            runtime.block_on(async move {
                let app = App::bind(backend_settings(), "127.0.0.1:0")
                    .await
                    .expect("binding the service");
                let base = format!("http://{}", app.local_addr());
                tokio::spawn(app.run_until(std::future::pending()));
                wait_until_ready(&base).await;
                started.send(base).expect("the tests wait for the service");
                std::future::pending::<()>().await;
            });
        });
        endpoint
            .recv()
            .expect("the service did not start (see its panic above)")
    })
}

/// Polls `/readyz` until it answers 200: Redis and the bucket are reachable.
async fn wait_until_ready(base: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http.get(format!("{base}/readyz")).send().await;
        match answer {
            Ok(answer) if answer.status().is_success() => return,
            other => assert!(
                Instant::now() < deadline,
                "the service is not ready after 30 s: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Running the CLI

/// What one run of the binary did.
struct Run {
    output: Output,
    stdout: String,
    stderr: String,
}

impl Run {
    fn succeeded(&self) -> bool {
        self.output.status.success()
    }

    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Asserts success; returns stdout's last line.
    fn expect_ok(&self, what: &str) -> String {
        assert!(
            self.succeeded(),
            "{what} failed ({:?}): stdout {:?}, stderr {:?}",
            self.output.status,
            self.stdout,
            self.stderr
        );
        self.stdout.lines().last().unwrap_or_default().to_owned()
    }

    /// Asserts failure with exit code 1 and one `error: …` line on stderr;
    /// returns that line.
    fn expect_failure(&self, what: &str) -> String {
        assert_eq!(
            self.code(),
            Some(1),
            "{what} should fail with exit code 1: stdout {:?}, stderr {:?}",
            self.stdout,
            self.stderr
        );
        let line = self.stderr.trim_end();
        assert!(
            line.starts_with("error: ") && !line.contains('\n'),
            "{what}: expected one `error:` line on stderr, got {line:?}"
        );
        line.to_owned()
    }
}

/// Runs `amo-storage ARGS` with `env` added, and without the caller's
/// `AMO_ENDPOINT` and `AMO_KEY`.
fn amo_with_env<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &OsStr)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_amo-storage"));
    command
        .args(args)
        .env_remove("AMO_ENDPOINT")
        .env_remove("AMO_KEY");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("running amo-storage");
    Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        output,
    }
}

/// Runs `amo-storage ARGS`.
fn amo<S: AsRef<OsStr>>(args: &[S]) -> Run {
    amo_with_env(args, &[])
}

// ---------------------------------------------------------------------------
// Files and keys

/// A new account key file in `dir`; returns its path and address.
fn new_key(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let address = amo(&[
        OsStr::new("key"),
        "new".as_ref(),
        "--out".as_ref(),
        path.as_os_str(),
    ])
    .expect_ok("key new");
    (path, address)
}

/// Writes `size` random bytes to `path`, in blocks; returns their SHA-256
/// (upper-case hex).
fn random_file(path: &Path, size: usize) -> String {
    let mut file = std::fs::File::create(path).unwrap();
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len());
        rand::rng().fill_bytes(&mut block[..n]);
        hasher.update(&block[..n]);
        file.write_all(&block[..n]).unwrap();
        left -= n;
    }
    hex::encode_upper(hasher.finalize())
}

/// The SHA-256 of a file (upper-case hex), read in blocks.
fn file_sha256(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut block).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    hex::encode_upper(hasher.finalize())
}

/// The names of the entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Uploads `file` with `key`; returns the id printed on stdout's last line.
fn upload(file: &Path, key: &Path) -> String {
    amo(&[
        OsStr::new("parcel"),
        "upload".as_ref(),
        file.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--endpoint".as_ref(),
        endpoint().as_ref(),
    ])
    .expect_ok("parcel upload")
}

/// Removes parcel `id` with `key`.
fn remove(id: &str, key: &Path) {
    amo(&[
        OsStr::new("parcel"),
        "remove".as_ref(),
        id.as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--endpoint".as_ref(),
        endpoint().as_ref(),
    ])
    .expect_ok("parcel remove");
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn key_new_and_key_show_agree_on_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let (key, address) = new_key(dir.path(), "account.key");

    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.len(), 64, "{text:?}");
    assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let shown = amo(&[
        OsStr::new("key"),
        "show".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
    ]);
    shown.expect_ok("key show");
    let field = |name: &str| {
        shown
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {:?}", shown.stdout))
            .trim()
            .to_owned()
    };
    assert_eq!(field("address:"), address);
    // The address, derived here independently from the printed public key.
    let public = hex::decode(field("public_key:")).unwrap();
    assert_eq!(public.len(), 65);
    assert_eq!(public[0], 4);
    assert_eq!(address, hex::encode_upper(&Sha256::digest(&public)[..20]));

    // An existing file is never overwritten.
    let again = amo(&[
        OsStr::new("key"),
        "new".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
    ]);
    assert!(
        again
            .expect_failure("key new over a file")
            .contains("already exists")
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);
}

#[test]
fn a_64_mib_file_round_trips_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (key, address) = new_key(dir.path(), "owner.key");
    let original = dir.path().join("original.bin");
    let hash = random_file(&original, 64 << 20);

    let uploaded = amo(&[
        OsStr::new("parcel"),
        "upload".as_ref(),
        original.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--endpoint".as_ref(),
        endpoint().as_ref(),
        "--metadata".as_ref(),
        r#"{"name": "round trip"}"#.as_ref(),
    ]);
    let id = uploaded.expect_ok("parcel upload");
    assert_eq!(id.len(), 72, "{id:?}");
    assert!(id.ends_with(&hash), "id {id} does not end with {hash}");
    // stderr is not a terminal here: no progress bar, nothing at all.
    assert_eq!(uploaded.stderr, "");

    let copy = dir.path().join("copy.bin");
    let downloaded = amo(&[
        OsStr::new("parcel"),
        "download".as_ref(),
        id.as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--endpoint".as_ref(),
        endpoint().as_ref(),
        "-o".as_ref(),
        copy.as_os_str(),
    ]);
    downloaded.expect_ok("parcel download");
    assert_eq!(downloaded.stderr, "");
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), 64 << 20);
    assert_eq!(file_sha256(&copy), hash);
    assert_eq!(
        entries(dir.path()),
        ["copy.bin", "original.bin", "owner.key"],
        "no temporary file is left"
    );

    let inspected = amo(&["parcel", "inspect", &id, "--endpoint", endpoint()]);
    inspected.expect_ok("parcel inspect");
    let metadata: Value = serde_json::from_str(&inspected.stdout).unwrap();
    assert_eq!(metadata["size"], 64 << 20);
    assert_eq!(metadata["metadata"]["name"], "round trip");
    assert_eq!(metadata["owner"], address.as_str());

    remove(&id, &key);
}

#[test]
fn a_download_by_another_account_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (owner, _) = new_key(dir.path(), "owner.key");
    let (stranger, _) = new_key(dir.path(), "stranger.key");
    let original = dir.path().join("original.bin");
    random_file(&original, 300 << 10);
    let id = upload(&original, &owner);

    let target = dir.path().join("stolen.bin");
    let refused = amo(&[
        OsStr::new("parcel"),
        "download".as_ref(),
        id.as_ref(),
        "--key".as_ref(),
        stranger.as_os_str(),
        "--endpoint".as_ref(),
        endpoint().as_ref(),
        "-o".as_ref(),
        target.as_os_str(),
    ]);
    let error = refused.expect_failure("a stranger's download");
    assert_eq!(
        error,
        format!("error: 403 Forbidden: only the owner may download parcel {id}")
    );
    assert_eq!(refused.stdout, "");
    assert!(!target.exists());
    assert_eq!(
        entries(dir.path()),
        ["original.bin", "owner.key", "stranger.key"],
        "no temporary file is left"
    );

    remove(&id, &owner);
}

#[test]
fn inspect_shows_the_owner_and_after_remove_answers_404() {
    let dir = tempfile::tempdir().unwrap();
    let (key, address) = new_key(dir.path(), "owner.key");
    let original = dir.path().join("original.bin");
    let hash = random_file(&original, 4096);
    let id = upload(&original, &key);
    assert!(id.ends_with(&hash));

    // The endpoint and the key from AMO_ENDPOINT and AMO_KEY.
    let endpoint = OsStr::new(endpoint());
    let inspected = amo_with_env(&["parcel", "inspect", &id], &[("AMO_ENDPOINT", endpoint)]);
    inspected.expect_ok("parcel inspect");
    let metadata: Value = serde_json::from_str(&inspected.stdout)
        .unwrap_or_else(|err| panic!("inspect printed no JSON ({err}): {:?}", inspected.stdout));
    assert_eq!(metadata["id"], id.as_str());
    assert_eq!(metadata["owner"], address.as_str());
    assert_eq!(metadata["metadata"]["owner"], address.as_str());
    assert_eq!(metadata["size"], 4096);

    let removed = amo_with_env(
        &["parcel", "remove", &id],
        &[("AMO_ENDPOINT", endpoint), ("AMO_KEY", key.as_os_str())],
    );
    removed.expect_ok("parcel remove");

    let gone = amo_with_env(&["parcel", "inspect", &id], &[("AMO_ENDPOINT", endpoint)]);
    assert_eq!(
        gone.expect_failure("inspect after remove"),
        format!("error: 404 Not Found: parcel {id} not found")
    );
    assert_eq!(gone.stdout, "");
}

#[test]
fn without_an_endpoint_the_parcel_commands_are_a_usage_error() {
    let run = amo(&["parcel", "inspect", &"0".repeat(72)]);
    assert_eq!(run.code(), Some(2), "{:?}", run.stderr);
    assert!(run.stderr.contains("--endpoint"), "{:?}", run.stderr);
}

// ---------------------------------------------------------------------------
// Resumable uploads

/// A TCP proxy to the service. The connection that carries the client's
/// byte number `cut_after`, counted over all connections (a client may
/// open a new connection for each request), is cut there: the service's
/// side is closed (it sees a body cut mid-way), and the client's is closed
/// too if `close_client`, else left open and unanswered (the client hangs,
/// as on a dead link). Later connections pass through. Answers the proxy's
/// URL and a flag that says the cut happened.
fn cutting_proxy(
    cut_after: usize,
    close_client: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::{
        net::{Shutdown, TcpListener, TcpStream},
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
    };
    let target = endpoint().trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    let sent = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let mut server = TcpStream::connect(&target).unwrap();
            let (mut client_out, mut server_in) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (cut, sent) = (cut.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut block = vec![0u8; 64 * 1024];
                loop {
                    let n = match client.read(&mut block) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let before = sent.fetch_add(n, Ordering::SeqCst);
                    if before + n > cut_after && !cut.swap(true, Ordering::SeqCst) {
                        let _ = server.write_all(&block[..cut_after.saturating_sub(before)]);
                        std::thread::sleep(Duration::from_millis(200));
                        let _ = server.shutdown(Shutdown::Both);
                        if close_client {
                            let _ = client.shutdown(Shutdown::Both);
                        } else {
                            while matches!(client.read(&mut block), Ok(n) if n > 0) {}
                        }
                        return;
                    }
                    if server.write_all(&block[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut block = vec![0u8; 64 * 1024];
                while let Ok(n) = server_in.read(&mut block) {
                    if n == 0 || client_out.write_all(&block[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (url, flag)
}

/// The arguments of a resumable upload of `file` through `url`.
fn resumable_args(file: &Path, key: &Path, url: &str, state: &Path) -> Vec<std::ffi::OsString> {
    [
        OsStr::new("parcel"),
        "upload".as_ref(),
        file.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--endpoint".as_ref(),
        url.as_ref(),
        "--resumable".as_ref(),
        "--chunk-size".as_ref(),
        "8388608".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]
    .iter()
    .map(|arg| arg.to_os_string())
    .collect()
}

/// Downloads `id` with `key` and checks it against `hash`.
fn assert_downloads(id: &str, key: &Path, dir: &Path, hash: &str) {
    let copy = dir.join("copy.bin");
    amo(&[
        OsStr::new("parcel"),
        "download".as_ref(),
        id.as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--endpoint".as_ref(),
        endpoint().as_ref(),
        "-o".as_ref(),
        copy.as_os_str(),
    ])
    .expect_ok("parcel download");
    assert_eq!(file_sha256(&copy), hash);
}

/// A resumable upload whose connection is cut mid-PATCH goes on from the
/// service's offset in the same run, and leaves no state file.
#[test]
fn a_resumable_upload_survives_a_cut_connection() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (key, _) = new_key(dir.path(), "owner.key");
    let original = dir.path().join("original.bin");
    let hash = random_file(&original, 20 << 20);
    let (url, cut) = cutting_proxy(11 << 20, true);

    let run = amo(&resumable_args(&original, &key, &url, &state));
    let id = run.expect_ok("resumable upload");
    assert!(cut.load(std::sync::atomic::Ordering::SeqCst), "the proxy cut");
    assert!(run.stderr.contains("retrying"), "{:?}", run.stderr);
    assert!(id.ends_with(&hash), "{id}");
    assert_eq!(entries(&state), Vec::<String>::new(), "the state file is gone");
    assert_downloads(&id, &key, dir.path(), &hash);
    remove(&id, &key);
}

/// Ctrl-C during a resumable upload keeps its state file; the same command
/// then resumes from the service's offset.
#[test]
fn an_interrupted_resumable_upload_resumes_where_the_service_stands() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (key, _) = new_key(dir.path(), "owner.key");
    let original = dir.path().join("original.bin");
    let hash = random_file(&original, 20 << 20);
    let (url, cut) = cutting_proxy(13 << 20, false);
    let args = resumable_args(&original, &key, &url, &state);

    let mut running = Command::new(env!("CARGO_BIN_EXE_amo-storage"))
        .args(&args)
        .env_remove("AMO_ENDPOINT")
        .env_remove("AMO_KEY")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cut.load(std::sync::atomic::Ordering::SeqCst) {
        if let Some(status) = running.try_wait().unwrap() {
            let mut stderr = String::new();
            let _ = running.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("the CLI ended ({status}) before the cut: {stderr}");
        }
        assert!(Instant::now() < deadline, "the upload never reached the cut");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The CLI's state names the upload (what a resumed run reads) before it
    // is interrupted.
    while entries(&state).len() != 1 {
        assert!(Instant::now() < deadline, "the CLI wrote no state file");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_process(Pid::from_child(&running), Signal::INT)
        .expect("SIGINT to the CLI");
    let status = running.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(entries(&state).len(), 1, "the state file is kept");

    let run = amo(&args);
    let id = run.expect_ok("the resumed upload");
    assert!(run.stderr.contains("resuming at byte"), "{:?}", run.stderr);
    assert!(id.ends_with(&hash), "{id}");
    assert_eq!(entries(&state), Vec::<String>::new(), "the state file is gone");
    assert_downloads(&id, &key, dir.path(), &hash);
    remove(&id, &key);
}
