//! Runs the demo's stages as `ckpt` child processes in the demo folder, several at once
//! where a stage allows, each with its output in `logs/<label>.log`.
//!
//! Ctrl-C: the children run in their own process groups, so a terminal's Ctrl-C reaches
//! only the demo, which passes one SIGINT to each child (a second one would make
//! `ckpt train` quit without saving), waits for them to save, and stops.

use crate::error::{Error, Result};
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// One `ckpt` command line and the name of its log.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub(crate) label: String,
    pub(crate) args: Vec<String>,
}

impl Invocation {
    pub fn new(label: impl Into<String>, args: &[&str]) -> Self {
        Invocation {
            label: label.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// The command as a person would type it.
    pub fn display(&self) -> String {
        let mut s = String::from("ckpt");
        for a in &self.args {
            s.push(' ');
            if a.contains(' ') {
                s.push_str(&format!("'{a}'"));
            } else {
                s.push_str(a);
            }
        }
        s
    }
}

/// Raised by Ctrl-C.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes Ctrl-C raise a flag instead of killing the demo (once per process).
pub fn catch_ctrl_c() -> Result<()> {
    static INSTALLED: std::sync::OnceLock<std::result::Result<(), String>> =
        std::sync::OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst)).map_err(|e| e.to_string())
    });
    installed
        .clone()
        .map_err(|e| Error::Invalid(format!("cannot install the Ctrl-C handler: {e}")))
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Where and how the commands run.
pub struct Commands {
    /// The `ckpt` executable (the running one).
    pub(crate) exe: PathBuf,
    /// The demo folder: every command runs there, with relative paths.
    pub(crate) dir: PathBuf,
    /// Commands running at once at most.
    pub(crate) jobs: usize,
}

struct Running {
    inv: Invocation,
    child: Child,
    signalled: bool,
}

impl Commands {
    pub fn log_path(&self, label: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{label}.log"))
    }

    /// Runs every invocation, `jobs` at a time; all of them are waited for, and the
    /// first failure (or Ctrl-C) is reported once they have stopped.
    pub fn run_all(&self, invocations: &[Invocation]) -> Result<()> {
        let mut pending: Vec<Invocation> = invocations.iter().rev().cloned().collect();
        let mut running: Vec<Running> = Vec::new();
        let mut failure: Option<Error> = None;
        while !pending.is_empty() || !running.is_empty() {
            let stopping = failure.is_some() || interrupted();
            while !stopping && running.len() < self.jobs.max(1) {
                let Some(inv) = pending.pop() else { break };
                let child = self.spawn(&inv)?;
                running.push(Running {
                    inv,
                    child,
                    signalled: false,
                });
            }
            if interrupted() {
                for r in running.iter_mut().filter(|r| !r.signalled) {
                    send_sigint(&r.child);
                    r.signalled = true;
                }
            }
            let mut still = Vec::new();
            for mut r in running.drain(..) {
                match r.child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() && failure.is_none() {
                            failure = Some(self.failed(&r.inv, status));
                        }
                    }
                    Ok(None) => still.push(r),
                    Err(e) => return Err(Error::Invalid(format!("{}: {e}", r.inv.display()))),
                }
            }
            running = still;
            if failure.is_some() || interrupted() {
                pending.clear();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if interrupted() {
            return Err(Error::Interrupted(
                "interrupted: what finished is saved; run the same command again to resume".into(),
            ));
        }
        failure.map_or(Ok(()), Err)
    }

    fn spawn(&self, inv: &Invocation) -> Result<Child> {
        let log_path = self.log_path(&inv.label);
        let logs = log_path.parent().expect("logs/ folder");
        std::fs::create_dir_all(logs).map_err(|e| Error::io(logs, e))?;
        // Appended: a resumed stage keeps the interrupted attempt's output above.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        let err_log = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        Command::new(&self.exe)
            .args(&inv.args)
            .current_dir(&self.dir)
            // Offline by construction: nothing the demo runs may reach the Hub.
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::Invalid(format!("cannot start {}: {e}", self.exe.display())))
    }

    fn failed(&self, inv: &Invocation, status: ExitStatus) -> Error {
        let log = self.log_path(&inv.label);
        let tail = last_lines(&log, 8);
        Error::Invalid(format!(
            "`{}` failed ({status}); {} ends with:\n{tail}\nFix the cause and run the same \
             command again: finished stages are kept.",
            inv.display(),
            relative(&log, &self.dir).display(),
        ))
    }
}

fn send_sigint(child: &Child) {
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn relative<'a>(path: &'a Path, base: &Path) -> &'a Path {
    path.strip_prefix(base).unwrap_or(path)
}
