//! Shared set-up for the gateway's integration tests: a temporary state directory, master key
//! files, and runners for the real `gigmcp` and `gigmcpd` binaries.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use gateway::store::{SqliteStore, Store};
use gateway::vault::{MasterKey, Vault};

#[derive(Debug)]
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub key_file: PathBuf,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = dir.path().join("state");
        let key_file = dir.path().join("master.key");
        MasterKey::generate_file(&key_file).expect("keygen");
        Self {
            dir,
            state_dir,
            key_file,
        }
    }

    /// A second, different key file in the same temp dir.
    pub fn other_key(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        MasterKey::generate_file(&path).expect("keygen");
        path
    }

    pub fn key(&self) -> MasterKey {
        MasterKey::from_file(&self.key_file).expect("key")
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open_in(&self.state_dir).expect("store"))
    }

    pub fn vault(&self) -> Vault {
        Vault::open(self.store(), self.key()).expect("vault")
    }

    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join(gateway::store::sqlite::DB_FILE)
    }

    /// Runs `gigmcp --state-dir S --master-key-file K ARGS` with `stdin` piped in.
    pub fn cli(&self, args: &[&str], stdin: &[u8]) -> Output {
        self.cli_with_key(&self.key_file, args, stdin)
    }

    pub fn cli_with_key(&self, key: &Path, args: &[&str], stdin: &[u8]) -> Output {
        run_with_stdin(
            Command::new(crate::bins::workspace_bin("gigmcp"))
                .arg("--state-dir")
                .arg(&self.state_dir)
                .arg("--master-key-file")
                .arg(key)
                .args(args),
            stdin,
        )
    }

    /// Every byte of every file under the state directory (database, WAL, shared memory).
    pub fn state_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.state_dir).expect("state dir") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("read");
                out.push((path, bytes));
            }
        }
        out.sort();
        out
    }
}

pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("random");
    hex::encode(buf)
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
