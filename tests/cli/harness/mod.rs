//! The one test harness of the `cli` test binary.
//!
//! - [`bin`] / [`command`]: the `corescope` binary with one environment
//!   hygiene ([`scrub`]), so no test sees the developer's `CORESCOPE_DB`,
//!   `RUST_LOG`, journal or terminal settings.
//! - [`FIXTURES`] / [`Fixture`]: the shared fixtures, resolved relative to
//!   this crate (never an absolute path of one machine).
//! - [`Corescope`]: a fluent builder for one run, in the style of just's test
//!   DSL: `Corescope::new().fixture(Fixture::Legacy).args(["check", "--json"])
//!   .expect_code(3).json()`.
//!
//! The older helper sets live on as submodules (`common`, `support`,
//! `edges_common`, `packets`) so the test bodies that call them stay as they
//! were; their binary runs go through [`bin`] / [`command`].
#![allow(dead_code)]

pub mod common;
pub mod edges_common;
pub mod packets;
pub mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The shared fixture directory (read-only; tests copy what they write).
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");

/// Environment variables a run never inherits from the test process: they
/// would select another database, config or metrics file, inject a test
/// fault, change the log format (journal, colour) or the help width. Every
/// other `CORESCOPE_*` variable of the test process is removed as well (see
/// [`scrub`]); tests set what they need explicitly.
pub const SCRUBBED: &[&str] = &[
    "CORESCOPE_DB",
    "CORESCOPE_CONFIG",
    "CORESCOPE_METRICS_FILE",
    "CORESCOPE_TEST_DISK_FULL_AFTER_PAGES",
    "CORESCOPE_TEST_FREE_BYTES",
    "RUST_LOG",
    "JOURNAL_STREAM",
    "NO_COLOR",
    "COLUMNS",
    "LINES",
];

/// The real databases under [`FIXTURES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// `legacy-2026-03.db`: a real, unmigrated CoreScope database.
    Legacy,
}

impl Fixture {
    pub fn file_name(self) -> &'static str {
        match self {
            Fixture::Legacy => "legacy-2026-03.db",
        }
    }

    pub fn path(self) -> PathBuf {
        Path::new(FIXTURES).join(self.file_name())
    }

    /// A writable copy in `dir` (the original is never written).
    pub fn copy_to(self, dir: &Path) -> PathBuf {
        let dst = dir.join(self.file_name());
        copy_writable(&self.path(), &dst);
        dst
    }
}

/// Copy `src` to `dst` and make the copy writable (fixtures are read-only).
pub fn copy_writable(src: &Path, dst: &Path) {
    std::fs::copy(src, dst)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
    let mut perm = std::fs::metadata(dst)
        .unwrap_or_else(|e| panic!("stat {}: {e}", dst.display()))
        .permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(dst, perm).unwrap_or_else(|e| panic!("chmod {}: {e}", dst.display()));
}

/// Remove every variable of [`SCRUBBED`] and every `CORESCOPE_*` variable of
/// the test process from `cmd`'s environment.
pub fn scrub(cmd: &mut Command) -> &mut Command {
    for k in SCRUBBED {
        cmd.env_remove(k);
    }
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CORESCOPE_") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// Path of the binary under test.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corescope"))
}

/// The binary as a plain `std::process::Command`, environment scrubbed.
pub fn command() -> Command {
    let mut c = Command::new(exe());
    scrub(&mut c);
    c
}

/// The binary as an `assert_cmd::Command`, environment scrubbed.
pub fn bin() -> assert_cmd::Command {
    assert_cmd::Command::from_std(command())
}

/// One run of the binary, built fluently; the terminal methods ([`run`],
/// [`stdout`], [`stderr`], [`json`]) run it and assert the exit code
/// (0 unless [`expect_code`] says otherwise).
///
/// [`run`]: Corescope::run
/// [`stdout`]: Corescope::stdout
/// [`stderr`]: Corescope::stderr
/// [`json`]: Corescope::json
/// [`expect_code`]: Corescope::expect_code
pub struct Corescope {
    cmd: Command,
    db: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    code: i32,
    tempdir: Option<tempfile::TempDir>,
}

impl Default for Corescope {
    fn default() -> Self {
        Self::new()
    }
}

impl Corescope {
    pub fn new() -> Self {
        Corescope {
            cmd: command(),
            db: None,
            stdin: None,
            code: 0,
            tempdir: None,
        }
    }

    /// Run on a fresh writable copy of `fixture` (in a temporary directory
    /// that lives as long as this builder).
    pub fn fixture(mut self, fixture: Fixture) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = fixture.copy_to(dir.path());
        self.tempdir = Some(dir);
        self.db(db)
    }

    /// `--db PATH`.
    pub fn db(mut self, path: impl AsRef<Path>) -> Self {
        self.db = Some(path.as_ref().to_path_buf());
        self
    }

    /// The database this run uses (`.db` or the copy made by `.fixture`).
    pub fn db_path(&self) -> Option<&Path> {
        self.db.as_deref()
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    pub fn expect_code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }

    /// Run, assert the exit code, return the whole output.
    pub fn run(mut self) -> Output {
        if let Some(db) = &self.db {
            self.cmd.arg("--db").arg(db);
        }
        let out = match self.stdin.take() {
            Some(input) => {
                use std::io::Write;
                self.cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = self.cmd.spawn().expect("spawn corescope");
                let mut pipe = child.stdin.take().expect("stdin pipe");
                // A command that does not read stdin may close it early.
                let _ = pipe.write_all(&input);
                drop(pipe);
                child.wait_with_output().expect("wait for corescope")
            }
            None => self
                .cmd
                .stdin(Stdio::null())
                .output()
                .expect("run corescope"),
        };
        assert_eq!(
            out.status.code(),
            Some(self.code),
            "{:?}: want exit code {}, got {:?}\nstdout:\n{}\nstderr:\n{}",
            self.cmd,
            self.code,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn stdout(self) -> String {
        let out = self.run();
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    pub fn stderr(self) -> String {
        let out = self.run();
        String::from_utf8(out.stderr).expect("stderr is UTF-8")
    }

    /// stdout parsed as exactly one JSON value.
    pub fn json(self) -> serde_json::Value {
        let out = self.run();
        common::json_of(&out.stdout)
    }
}

#[test]
fn scrub_removes_every_variable_corescope_reads() {
    let mut c = Command::new("true");
    for k in SCRUBBED {
        c.env(k, "1");
    }
    scrub(&mut c);
    let left: Vec<_> = c.get_envs().filter(|(_, v)| v.is_some()).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn builder_runs_on_a_fixture_copy_and_leaves_the_fixture_alone() {
    let before = common::sha256(&Fixture::Legacy.path());
    let v = Corescope::new()
        .fixture(Fixture::Legacy)
        .args(["--json", "check"])
        .expect_code(3)
        .json();
    assert_eq!(v["command"], "check");
    assert_eq!(v["ready"], false);
    assert_eq!(common::sha256(&Fixture::Legacy.path()), before);
}

/// With `autotests = false`, a test file that is not a module of this binary
/// would silently never run: every `tests/*.rs` must move to
/// `tests/cli/<name>.rs`, and every `tests/cli/*.rs` must be a `mod` of
/// `tests/cli/main.rs`.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let rs = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".rs"))
            .collect();
        v.sort();
        v
    };
    let stray = rs(&root);
    assert!(
        stray.is_empty(),
        "{stray:?} under tests/ are not compiled (Cargo.toml has autotests = false): \
         move them to tests/cli/ and add `mod <name>;` to tests/cli/main.rs"
    );
    let main = std::fs::read_to_string(root.join("cli/main.rs")).expect("read tests/cli/main.rs");
    for f in rs(&root.join("cli")) {
        let name = f.trim_end_matches(".rs");
        if name == "main" {
            continue;
        }
        assert!(
            main.lines().any(|l| l.trim() == format!("mod {name};")),
            "tests/cli/{f} is not compiled: add `mod {name};` to tests/cli/main.rs"
        );
    }
}
