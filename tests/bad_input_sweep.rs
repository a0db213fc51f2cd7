//! The bad-input sweep, through the real binary: every value-taking flag of every
//! command (read from `ckpt CMD --help`, so a new flag is swept without editing this
//! file) gets 0, -1, NaN, ±inf, a huge integer, an empty string, a missing path, a
//! directory where a file is expected and a file where a directory is expected, on top
//! of a valid invocation of that command.
//!
//! Every case must end with exit 1 and one `error:` line, or a clap usage error (exit
//! 2), or succeed where the value is a valid one ([`ACCEPTED`], each with its reason).
//! None may panic (exit 101) or outlast [`LIMIT`].

mod common;

use common::{arg, texts_jsonl, Sandbox};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// No case may run longer.
const LIMIT: Duration = Duration::from_secs(20);

/// The values every flag is tried with; `{dir}` / `{file}` / `{missing}` are paths in
/// the sandbox.
const VALUES: [&str; 10] = [
    "0",
    "-1",
    "NaN",
    "inf",
    "-inf",
    "99999999999999999999",
    "",
    "{missing}",
    "{dir}",
    "{file}",
];

/// Commands not swept: `demo` runs for minutes when its flags are valid (its bad input
/// has its own tests in tests/demo.rs); `help` takes no values.
const NOT_SWEPT: [&str; 2] = ["demo", "help"];

/// Flags not swept, with why.
const NOT_SWEPT_FLAGS: [(&str, &str); 2] = [
    // Listening on any free port is what 0 means; every other value is swept.
    ("serve", "--host"),
    // Names the environment variable holding the judge's key; any name is valid.
    ("eval", "--judge-key-env"),
];

/// (command, flag, value) that are valid and succeed, with why. `*` matches any value;
/// `{missing}`, `{dir}`, `{file}` are the sweep's paths.
const ACCEPTED: &[(&str, &str, &str, &str)] = &[
    ("eval", "--judge-seed", "0", "a seed"),
    ("sharpness", "--seed", "0", "a seed"),
    ("synth", "--seed", "0", "a seed"),
    (
        "eval",
        "--prefix-token-id",
        "0",
        "token 0 is a token of the vocabulary",
    ),
    (
        "score",
        "--prefix-token-id",
        "0",
        "token 0 is a token of the vocabulary",
    ),
    ("eval", "--num-fewshot", "0", "zero-shot"),
    ("tasks", "--num-fewshot", "0", "zero-shot"),
    ("eval", "--judge-retries", "0", "no retries"),
    (
        "eval",
        "--judge-top-logprobs",
        "0",
        "the sampled token's log-probability alone",
    ),
    (
        "eval",
        "--output",
        "{dir}",
        "an existing directory to write the exports into",
    ),
    (
        "report",
        "--out",
        "{dir}",
        "an existing directory to write the report into",
    ),
    (
        "synth",
        "--out",
        "{dir}",
        "an existing directory to write the world into",
    ),
    (
        "tokenize",
        "--out",
        "{dir}",
        "an existing (empty) directory for the shards",
    ),
    (
        "eval",
        "--store",
        "*",
        "a store file of that name is created (parents too)",
    ),
    (
        "sharpness",
        "--store",
        "*",
        "a store file of that name is created (parents too)",
    ),
    (
        "store merge",
        "--into",
        "*",
        "a store file of that name is created (in an existing directory)",
    ),
    (
        "schedule",
        "--out",
        "*",
        "a file of that name is written (parents created)",
    ),
    ("schedule", "--title", "*", "any text is a title"),
    (
        "sharpness",
        "--save-batches",
        "*",
        "a file of that name is written (parents created)",
    ),
    (
        "eval",
        "--tasks-dir",
        "{dir}",
        "a directory without task specs adds none",
    ),
    (
        "tasks",
        "--tasks-dir",
        "{dir}",
        "a directory without task specs adds none",
    ),
    (
        "eval",
        "--fewshot-dir",
        "{dir}",
        "an existing directory; a task that needs a file names it",
    ),
    ("schedule", "--alpha", "0", "decay to 0"),
    ("schedule", "--decay-steps", "0", "no decay: WSO"),
    ("schedule", "--stable-ratio", "0", "no stable phase"),
    ("schedule", "--warmup", "0", "no warmup"),
    (
        "schedule",
        "--peak-lr",
        "99999999999999999999",
        "any finite positive LR draws a curve",
    ),
    ("score", "--text", "{file}", "a text file is what it reads"),
    (
        "sharpness",
        "--data",
        "{file}",
        "a text file is what it reads",
    ),
    (
        "synth",
        "--pretrain-docs",
        "0",
        "a world without that corpus (eval tasks only, say)",
    ),
    (
        "synth",
        "--midtrain-docs",
        "0",
        "a world without that corpus",
    ),
    ("synth", "--sft-chats", "0", "a world without that corpus"),
    (
        "synth",
        "--validation-docs",
        "0",
        "a world without that corpus",
    ),
    (
        "synth",
        "--instructions",
        "0",
        "a world without that corpus",
    ),
];

/// The outcome of one case.
#[derive(Debug)]
struct Outcome {
    case: String,
    code: Option<i32>,
    stderr: String,
    seconds: f64,
    timed_out: bool,
}

/// Valid invocations of every command, on small fixtures in `sb`.
fn base_invocations(sb: &Sandbox) -> Vec<(&'static str, Vec<String>)> {
    let ckpt = sb.copy_fixture("llama_gqa");
    let texts = texts_jsonl();
    let s = |p: &Path| arg(p).to_string();
    let out = |name: &str| s(&sb.path().join("out").join(name));
    let run = sb.path().join("run");
    common::copy_dir_all(&common::fixture_in("merge", "run"), &run);
    vec![
        ("inspect", vec![s(&ckpt)]),
        ("score", vec![s(&ckpt), "--text".into(), s(&texts)]),
        (
            "eval",
            vec![
                s(&ckpt),
                "--tasks".into(),
                "arc_easy".into(),
                "--data-dir".into(),
                "evaldata".into(),
                "--limit".into(),
                "1".into(),
                "--store".into(),
                out("eval.sqlite"),
            ],
        ),
        (
            "sharpness",
            vec![
                s(&ckpt),
                "--data".into(),
                s(&texts),
                "--samples".into(),
                "1".into(),
                "--max-batches".into(),
                "1".into(),
                "--seq-len".into(),
                "16".into(),
                "--store".into(),
                out("sharpness.sqlite"),
            ],
        ),
        (
            "merge",
            vec![
                s(&run),
                "--emulate".into(),
                "cosine".into(),
                "--window".into(),
                "300".into(),
                "--out".into(),
                out("merged"),
            ],
        ),
        (
            "schedule",
            vec![
                "--kind".into(),
                "wsd".into(),
                "--peak-lr".into(),
                "3e-4".into(),
                "--warmup".into(),
                "10".into(),
                "--steps".into(),
                "100".into(),
            ],
        ),
        (
            "tokenize",
            vec![
                s(&texts),
                "--tokenizer".into(),
                s(&ckpt),
                "--out".into(),
                out("shards"),
            ],
        ),
        (
            "synth",
            vec![
                "--out".into(),
                out("synth"),
                "--entities".into(),
                "5".into(),
                "--pretrain-docs".into(),
                "5".into(),
                "--midtrain-docs".into(),
                "5".into(),
                "--sft-chats".into(),
                "5".into(),
                "--validation-docs".into(),
                "5".into(),
                "--instructions".into(),
                "5".into(),
            ],
        ),
        ("tasks", vec![]),
        ("report", vec!["report.sqlite".into()]),
        (
            "store merge",
            vec![
                "report.sqlite".into(),
                "--into".into(),
                "merged.sqlite".into(),
            ],
        ),
        ("store status", vec!["report.sqlite".into()]),
        (
            "release",
            vec![
                s(&ckpt),
                "--repo".into(),
                "org/model".into(),
                "--dry-run".into(),
                out("release"),
                "--allow-unknown-schedule".into(),
            ],
        ),
        ("serve", vec![s(&ckpt), "--port".into(), "0".into()]),
        ("train", train_base()),
    ]
}

/// `ckpt train` of the tiny WSO recipe at test size, for 2 steps.
fn train_base() -> Vec<String> {
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/tiny-wso.toml");
    let mut args = vec![arg(&recipe).to_string()];
    for set in common::SMALL_RECIPE.iter().chain(&["training.steps=2"]) {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    args
}

/// `--flag` names of `ckpt CMD --help` that take a value (`CMD`: a command, or a
/// command and its subcommand, `store merge`).
fn value_flags(sb: &Sandbox, cmd: &str) -> Vec<String> {
    let help = sb.run(cmd.split(' ').chain(["--help"]));
    let text = String::from_utf8_lossy(&help.stdout);
    let re = regex::Regex::new(r"(?m)^\s+(?:-\w, )?(--[a-z0-9-]+) <").unwrap();
    re.captures_iter(&text).map(|c| c[1].to_string()).collect()
}

/// `base` with `flag` set to `value` (replacing the base's own value of it).
fn with_flag(base: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut args = base.to_vec();
    match args.iter().position(|a| a == flag) {
        Some(i) => args[i + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
    args
}

fn run_case(sb: &Sandbox, cmd: &str, args: &[String], case: String) -> Outcome {
    let started = Instant::now();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("ckpt"))
        .args(cmd.split(' '))
        .args(args)
        .current_dir(sb.path())
        .env("CKPT_CACHE_DIR", sb.cache_dir())
        .env("RUST_BACKTRACE", "1")
        .env_remove("CKPT_DEVICE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // `serve` with valid values listens until stopped: running past 3 s is its success.
    let limit = if cmd == "serve" {
        Duration::from_secs(3)
    } else {
        LIMIT
    };
    let (code, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status.code(), false);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        case,
        code,
        stderr: reader.join().unwrap(),
        seconds: started.elapsed().as_secs_f64(),
        timed_out,
    }
}

/// What is wrong with an outcome, if anything.
fn verdict(cmd: &str, flag: &str, value: &str, o: &Outcome) -> Option<String> {
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("error:")).collect();
    if o.stderr.contains("panicked") || o.code == Some(101) {
        return Some("panic".into());
    }
    if o.timed_out {
        return (cmd != "serve").then(|| format!("no result within {}s", LIMIT.as_secs()));
    }
    match o.code {
        Some(2) if !errors.is_empty() => None,
        Some(1) if errors.len() == 1 && lines.last() == errors.last().copied() => None,
        Some(1) => Some(format!(
            "exit 1 without one clean error line: {:?}",
            o.stderr
        )),
        Some(0) => {
            let accepted = ACCEPTED
                .iter()
                .any(|(c, f, v, _)| *c == cmd && *f == flag && (*v == "*" || *v == value));
            // A success is still checked for a quiet stderr: no stray error lines.
            (!accepted).then(|| "accepted".to_string())
        }
        other => Some(format!("exit {other:?}: {:?}", o.stderr)),
    }
}

#[test]
fn every_flag_of_every_command_with_bad_values() {
    let sb = Sandbox::new();
    assert!(sb
        .run(["synth", "--eval-tasks", "evaldata"])
        .status
        .success());
    sb.small_world();
    let bases = base_invocations(&sb);
    // The report's store: a real one, written by the base eval.
    let (_, eval_base) = bases.iter().find(|(c, _)| *c == "eval").unwrap();
    let seed = with_flag(eval_base, "--store", "report.sqlite");
    assert!(sb
        .run(std::iter::once("eval".to_string()).chain(seed))
        .status
        .success());
    let dir = sb.path().join("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let file = sb.write("a-file.txt", "not what was asked for\n");
    let missing: PathBuf = sb.path().join("missing/nothing-here");

    let mut cases: Vec<(String, String, String, Vec<String>)> = Vec::new();
    for (cmd, base) in &bases {
        // Each base invocation is itself valid.
        let o = run_case(&sb, cmd, base, format!("{cmd} (valid)"));
        assert!(
            o.code == Some(0) || (*cmd == "serve" && o.timed_out),
            "base invocation of {cmd} fails: {o:?}"
        );
        for flag in value_flags(&sb, cmd) {
            if NOT_SWEPT_FLAGS.contains(&(*cmd, flag.as_str())) {
                continue;
            }
            for v in VALUES {
                let value = v
                    .replace("{missing}", arg(&missing))
                    .replace("{dir}", arg(&dir))
                    .replace("{file}", arg(&file));
                let args = with_flag(base, &flag, &value);
                cases.push((cmd.to_string(), flag.clone(), v.to_string(), args));
            }
        }
    }
    assert!(bases.iter().all(|(c, _)| !NOT_SWEPT.contains(c)));
    let next = AtomicUsize::new(0);
    let problems = Mutex::new(Vec::new());
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((cmd, flag, v, args)) = cases.get(i) else {
                    break;
                };
                let o = run_case(&sb, cmd, args, format!("{cmd} {flag} {v:?}"));
                if let Some(why) = verdict(cmd, flag, v, &o) {
                    problems.lock().unwrap().push(format!("{}: {why}", o.case));
                }
                outcomes.lock().unwrap().push(o);
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap();
    let slowest = outcomes
        .iter()
        .max_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .unwrap();
    eprintln!(
        "{} cases over {} commands; slowest {:.1}s ({})",
        outcomes.len(),
        bases.len(),
        slowest.seconds,
        slowest.case
    );
    let problems = problems.into_inner().unwrap();
    assert!(
        problems.is_empty(),
        "{} of {} cases break the rule:\n{}",
        problems.len(),
        outcomes.len(),
        problems.join("\n")
    );
}

/// Runs `cases` (command, label, args) two at a time; returns the labels that break
/// the rule (with why) and how many ran.
fn sweep(
    sb: &Sandbox,
    cases: &[(String, String, Vec<String>)],
    accepted: &(dyn Fn(&str) -> bool + Sync),
) -> (Vec<String>, usize) {
    let next = AtomicUsize::new(0);
    let problems = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((cmd, label, args)) = cases.get(i) else {
                    break;
                };
                let o = run_case(sb, cmd, args, label.clone());
                let why = match verdict(cmd, "", "", &o) {
                    Some(w) if w != "panic" && accepted(label) => None,
                    other => other,
                };
                if let Some(why) = why {
                    problems.lock().unwrap().push(format!("{label}: {why}"));
                }
            });
        }
    });
    (problems.into_inner().unwrap(), cases.len())
}

/// Raw JSON values a config field is tried with (`None`: the field removed).
const JSON_VALUES: [Option<&str>; 9] = [
    Some("0"),
    Some("-1"),
    Some("NaN"),
    Some("Infinity"),
    Some("1e19"),
    Some("18446744073709551616"),
    Some("\"x\""),
    Some("null"),
    None,
];

#[test]
fn every_config_field_recipe_key_and_record_with_bad_values() {
    let sb = Sandbox::new();
    sb.small_world();
    let texts = texts_jsonl();
    let mut cases: Vec<(String, String, Vec<String>)> = Vec::new();

    // config.json: each field of a transformers-written config, broken.
    let fields = [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "max_position_embeddings",
        "head_dim",
        "rms_norm_eps",
        "rope_theta",
        "bos_token_id",
        "eos_token_id",
        "tie_word_embeddings",
    ];
    for (i, field) in fields.iter().enumerate() {
        for (j, value) in JSON_VALUES.iter().enumerate() {
            let dir = sb.copy_fixture_to("llama_gqa", &format!("configs/{i}-{j}"));
            let path = dir.join("config.json");
            let text = std::fs::read_to_string(&path).unwrap();
            let key = if *field == "rope_theta" {
                "    \"rope_theta\""
            } else {
                "  \""
            };
            let line_start = if *field == "rope_theta" {
                text.find(key).unwrap()
            } else {
                text.find(&format!("{key}{field}\"")).unwrap()
            };
            let line_end = line_start + text[line_start..].find('\n').unwrap();
            let line = &text[line_start..line_end];
            let comma = if line.ends_with(',') { "," } else { "" };
            let indent = &line[..line.find('"').unwrap()];
            let new = match value {
                Some(v) => format!("{indent}\"{field}\": {v}{comma}"),
                None => String::new(),
            };
            let mut edited = format!("{}{}{}", &text[..line_start], new, &text[line_end..]);
            if value.is_none() && comma.is_empty() {
                // The removed field was the last: drop the comma before it.
                let at = edited[..line_start].rfind(',').unwrap();
                edited.remove(at);
            }
            std::fs::write(&path, edited).unwrap();
            let label = format!("config.json {field} = {}", value.unwrap_or("(removed)"));
            let args = vec![
                arg(&dir).to_string(),
                "--text".into(),
                arg(&texts).to_string(),
            ];
            cases.push(("score".into(), label, args));
        }
    }

    // Recipes: each numeric key of the tiny recipe, through `--set`.
    let keys = [
        "model.hidden_size",
        "model.intermediate_size",
        "model.num_hidden_layers",
        "model.num_attention_heads",
        "model.num_key_value_heads",
        "model.head_dim",
        "model.rope_theta",
        "model.rms_norm_eps",
        "tokenizer.train_vocab_size",
        "optimizer.weight_decay",
        "optimizer.grad_clip",
        "schedule.peak_lr",
        "schedule.warmup",
        "schedule.total_steps",
        "training.batch_tokens",
        "training.seq_len",
        "training.checkpoint_every",
        "training.steps",
        "job.seed",
        "job.name",
    ];
    let toml_values = [
        "0",
        "-1",
        "nan",
        "inf",
        "9223372036854775807",
        "18446744073709551616",
        "\"\"",
        "\"../..\"",
    ];
    for (i, key) in keys.iter().enumerate() {
        for v in toml_values {
            let mut args = train_base();
            args.extend(["--set".into(), format!("job.out=runs/case-{i}-{}", v.len())]);
            args.extend(["--set".into(), format!("{key}={v}")]);
            cases.push(("train".into(), format!("--set {key}={v}"), args));
        }
    }

    // Records: malformed texts for `ckpt score` (and the same reader for sharpness).
    let records = [
        ("array.jsonl", "[\"a\", \"b\"]\n"),
        ("number.jsonl", "{\"text\": 5}\n"),
        ("empty-text.jsonl", "{\"text\": \"\"}\n"),
        ("no-text.jsonl", "{\"body\": \"x\"}\n"),
        ("broken.jsonl", "{\"text\": \"x\"\n"),
        ("empty.jsonl", ""),
        ("empty.txt", "\n\n"),
        ("latin1.txt", "caf\u{e9}"),
    ];
    let ckpt = sb.copy_fixture("llama_gqa");
    for (name, content) in records {
        let file = if name == "latin1.txt" {
            let path = sb.path().join(name);
            std::fs::write(&path, b"caf\xe9 au lait\n").unwrap();
            path
        } else {
            sb.write(name, content)
        };
        for cmd in ["score", "sharpness"] {
            let flag = if cmd == "score" { "--text" } else { "--data" };
            let args = vec![arg(&ckpt).to_string(), flag.into(), arg(&file).to_string()];
            cases.push((cmd.into(), format!("{cmd} {flag} {name}"), args));
        }
    }

    // Valid values among the above, with why.
    let accepted = |label: &str| {
        [
            // a seed, and a valid name
            "--set job.seed=0",
            "--set job.seed=9223372036854775807",
            "--set job.name=18446744073709551616",
            // no weight decay, no clipping, no warmup; a clip that never bites
            "--set optimizer.weight_decay=0",
            "--set optimizer.grad_clip=0",
            "--set optimizer.grad_clip=9223372036854775807",
            "--set schedule.warmup=0",
            // a schedule longer than the run, and a run saved only at its end
            "--set schedule.total_steps=9223372036854775807",
            "--set training.checkpoint_every=9223372036854775807",
            // WSO holds its LR: a run this long is valid (Ctrl-C saves; a rerun resumes)
            "--set training.steps=9223372036854775807",
            // positive and finite: the domain transformers accepts
            "--set model.rope_theta=9223372036854775807",
            "--set model.rms_norm_eps=9223372036854775807",
            "config.json rope_theta = 1e19",
            "config.json rope_theta = 18446744073709551616",
            "config.json rms_norm_eps = 1e19",
            "config.json rms_norm_eps = 18446744073709551616",
            // transformers' defaults (10000, 1e-6, 2048, untied) stand for a missing value
            "config.json rope_theta = null",
            "config.json rope_theta = (removed)",
            "config.json rms_norm_eps = null",
            "config.json rms_norm_eps = (removed)",
            "config.json max_position_embeddings = null",
            "config.json max_position_embeddings = (removed)",
            "config.json tie_word_embeddings = null",
            "config.json tie_word_embeddings = (removed)",
            // token 0 is a token; the tokenizer names BOS/EOS when the config does not
            "config.json bos_token_id = 0",
            "config.json eos_token_id = 0",
            "config.json bos_token_id = null",
            "config.json bos_token_id = (removed)",
            "config.json eos_token_id = null",
            "config.json eos_token_id = (removed)",
            // hidden_size / num_attention_heads
            "config.json head_dim = null",
            "config.json head_dim = (removed)",
        ]
        .contains(&label)
    };
    let (problems, n) = sweep(&sb, &cases, &accepted);
    eprintln!("{n} config, recipe and record cases");
    assert!(
        problems.is_empty(),
        "{} of {n} cases break the rule:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn serve_answers_bad_bodies_with_client_errors() {
    let sb = Sandbox::new();
    let ckpt = sb.copy_fixture("llama_gqa");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("ckpt"))
        .args(["serve", arg(&ckpt), "--port", "0"])
        .current_dir(sb.path())
        .env("CKPT_CACHE_DIR", sb.cache_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
    }
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    let client = reqwest::blocking::Client::builder()
        .timeout(LIMIT)
        .build()
        .unwrap();
    let big = format!(
        "{{\"model\": \"m\", \"prompt\": \"{}\"}}",
        "word ".repeat(2_000_000)
    );
    let bodies: Vec<(&str, &str, String)> = vec![
        ("POST", "/v1/chat/completions", "not json".into()),
        ("POST", "/v1/chat/completions", "[]".into()),
        (
            "POST",
            "/v1/chat/completions",
            "{\"messages\": \"x\"}".into(),
        ),
        ("POST", "/v1/chat/completions", "{\"messages\": []}".into()),
        (
            "POST",
            "/v1/chat/completions",
            "{\"messages\": [{\"role\": \"user\"}]}".into(),
        ),
        (
            "POST",
            "/v1/chat/completions",
            "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}".into(),
        ),
        (
            "POST",
            "/v1/chat/completions",
            "{\"messages\": [{\"role\": \"\", \"content\": \"x\"}]}".into(),
        ),
        (
            "POST",
            "/v1/chat/completions",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": -1}".into(),
        ),
        ("POST", "/v1/completions", "{\"prompt\": 5}".into()),
        (
            "POST",
            "/v1/completions",
            "{\"prompt\": \"x\", \"max_tokens\": 1e30}".into(),
        ),
        ("POST", "/v1/completions", big),
        ("POST", "/v1/nothing", "{}".into()),
        ("GET", "/v1/chat/completions", String::new()),
    ];
    let mut problems = Vec::new();
    for (method, path, body) in &bodies {
        let started = Instant::now();
        let req = match *method {
            "GET" => client.get(format!("{url}{path}")),
            _ => client.post(format!("{url}{path}")).body(body.clone()),
        };
        let label = format!(
            "{method} {path} {}",
            &body.chars().take(60).collect::<String>()
        );
        match req.send() {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let json: serde_json::Value = resp.json().unwrap_or_default();
                if !(400..500).contains(&status) || json["error"]["message"].as_str().is_none() {
                    problems.push(format!("{label}: {status} {json}"));
                }
            }
            Err(e) => problems.push(format!("{label}: {e}")),
        }
        if started.elapsed() > Duration::from_secs(5) {
            problems.push(format!("{label}: {:.1}s", started.elapsed().as_secs_f64()));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
