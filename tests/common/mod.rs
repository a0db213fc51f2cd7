//! Helpers shared by the CLI integration tests: fixture paths, a sandbox directory with
//! its own fingerprint cache, and running the real `ckpt` binary inside it.

#![allow(dead_code)] // each test file uses its own subset

pub mod bad_input;

use assert_cmd::Command;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The tiny transformers-written checkpoints under `tests/fixtures/parity`.
pub const FIXTURES: [&str; 5] = [
    "llama_gqa",
    "llama3_rope",
    "qwen2_bias",
    "llama_tied",
    "mistral_sharded",
];

/// `ckpt train --set` overrides that shrink a tiny recipe to test size: a ~60k-parameter
/// model, 24 steps of 16 x 32 tokens, checkpoints at 12 and 24.
pub const SMALL_RECIPE: [&str; 9] = [
    "model.hidden_size=32",
    "model.intermediate_size=86",
    "model.num_hidden_layers=2",
    "tokenizer.train_vocab_size=320",
    "training.seq_len=32",
    "training.batch_tokens=512",
    "schedule.warmup=4",
    "schedule.total_steps=24",
    "training.checkpoint_every=12",
];

/// `ckpt sharpness PATHS` on `texts.jsonl` as the quick tests measure: 16-token rows,
/// one batch, `samples` probes from `seed`, JSON out; `extra` flags after.
pub fn small_sharpness(paths: &[&str], samples: usize, seed: u64, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["sharpness".to_string()];
    args.extend(paths.iter().map(|s| s.to_string()));
    let (samples, seed) = (samples.to_string(), seed.to_string());
    let flags = [
        "--data",
        "texts.jsonl",
        "--seq-len",
        "16",
        "--max-batches",
        "1",
        "--samples",
        &samples,
        "--seed",
        &seed,
        "--json",
    ];
    args.extend(flags.iter().chain(extra).map(|s| s.to_string()));
    args
}

/// `tests/fixtures/parity`.
pub fn parity_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

/// One fixture checkpoint, in place (never modify it: copy it into a [`Sandbox`]).
pub fn fixture(name: &str) -> PathBuf {
    parity_dir().join(name)
}

/// A checkpoint under `tests/fixtures/<dir>`, in place.
pub fn fixture_in(dir: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .join(name)
}

/// A path as a command-line argument (test paths are UTF-8).
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `tests/fixtures/parity/texts.jsonl`.
pub fn texts_jsonl() -> PathBuf {
    parity_dir().join("texts.jsonl")
}

/// The texts of `texts.jsonl`, parsed here rather than by `ckpt`.
pub fn parity_texts() -> Vec<String> {
    std::fs::read_to_string(texts_jsonl())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// `reference.json`.
pub fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(parity_dir().join("reference.json")).unwrap()).unwrap()
}

/// Copies the regular files of `src` into `dst` (created).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
}

/// `root/runs`: a WSO run (`wso/step-1`, the trained tiny model) and a decayed one
/// (`wsd/step-2`, WSD with alpha 0.1), as `ckpt eval`'s relative table wants them.
pub fn wso_and_decayed_runs(root: &Path) -> PathBuf {
    let runs = root.join("runs");
    copy_dir(&fixture_in("trained", "tiny-wso"), &runs.join("wso/step-1"));
    copy_dir(&fixture("llama_gqa"), &runs.join("wsd/step-2"));
    std::fs::write(
        runs.join("wsd/step-2/ckpt.json"),
        r#"{"step": 2, "stage": "pre", "schedule": {"kind": "wsd", "alpha_pre": 0.1}}"#,
    )
    .unwrap();
    runs
}

/// Copies `src` into `dst`, subdirectories included.
pub fn copy_dir_all(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir_all(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

/// A temporary directory to copy and break fixtures in, with its own `CKPT_CACHE_DIR`
/// so that no test reads or writes the user's cache.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The sandbox root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The fingerprint cache directory every `ckpt` run of this sandbox uses.
    pub fn cache_dir(&self) -> PathBuf {
        self.path().join(".cache")
    }

    /// Copies fixture `name` to `<sandbox>/<name>` and returns the copy.
    pub fn copy_fixture(&self, name: &str) -> PathBuf {
        self.copy_fixture_to(name, name)
    }

    /// Copies fixture `name` to `<sandbox>/<rel>` and returns the copy.
    pub fn copy_fixture_to(&self, name: &str, rel: &str) -> PathBuf {
        let dst = self.path().join(rel);
        copy_dir(&fixture(name), &dst);
        dst
    }

    /// Generates the small synthetic world the training tests use under `data/synth`.
    pub fn small_world(&self) {
        let out = self.run([
            "synth",
            "--out",
            "data/synth",
            "--entities",
            "20",
            "--pretrain-docs",
            "400",
            "--midtrain-docs",
            "100",
            "--sft-chats",
            "120",
            "--validation-docs",
            "10",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes `<sandbox>/<rel>` and returns its path.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// `ckpt ARGS...`, run in the sandbox with a clean environment for `ckpt`'s own
    /// variables.
    pub fn ckpt<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::cargo_bin("ckpt").unwrap();
        cmd.current_dir(self.path())
            .env("CKPT_CACHE_DIR", self.cache_dir())
            .env_remove("CKPT_DEVICE")
            .env_remove("CKPT_LOG")
            .args(args);
        cmd
    }

    /// Runs `ckpt ARGS...` and returns its output, whatever the exit code.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.ckpt(args).output().unwrap()
    }

    /// Runs `ckpt ARGS...`, asserts success and parses stdout as JSON.
    pub fn run_json<I, S>(&self, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ckpt failed ({:?}); stderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// A `ckpt serve` process on a free loopback port, killed when dropped.
pub struct Served {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT/v1`.
    pub url: String,
    /// Its log, when [`Sandbox::serve_logged`] asked for one.
    pub log: Option<PathBuf>,
}

impl Served {
    /// `http://127.0.0.1:PORT`, for the routes outside `/v1` (`/health`).
    pub fn base(&self) -> &str {
        self.url.trim_end_matches("/v1")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sandbox {
    /// `ckpt serve ARGS... --port 0` in the sandbox, once it prints the line with its
    /// URL (its log goes to the test's stderr).
    pub fn serve<I, S>(&self, args: I) -> Served
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.start_serve(args, None)
    }

    /// [`Sandbox::serve`], its log (at info level) written to `log`.
    pub fn serve_logged<I, S>(&self, args: I, log: &Path) -> Served
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.start_serve(args, Some(log))
    }

    fn start_serve<I, S>(&self, args: I, log: Option<&Path>) -> Served
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ckpt"));
        cmd.current_dir(self.path())
            .env("CKPT_CACHE_DIR", self.cache_dir())
            .env_remove("CKPT_DEVICE")
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .stdout(Stdio::piped());
        match log {
            Some(path) => {
                cmd.env("CKPT_LOG", "info")
                    .stderr(std::fs::File::create(path).unwrap());
            }
            None => {
                cmd.env_remove("CKPT_LOG").stderr(Stdio::inherit());
            }
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"),
            "ckpt serve did not start: {line:?}"
        );
        Served {
            child,
            url,
            log: log.map(Path::to_path_buf),
        }
    }
}
