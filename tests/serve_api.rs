//! `ckpt serve` as real clients use it: Server-Sent Events whose pieces add up to the
//! non-streamed answer, seeded sampling, `n` choices, token-id prompts with `echo`
//! log-probabilities that agree with incremental decoding, Bearer keys, a bounded
//! queue, a client that leaves mid-stream, and bad requests that leave the server
//! serving.

mod common;

use common::{arg, Sandbox};
use serde_json::{json, Value};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A copy of tiny-wso whose context allows long generations.
fn tiny(sb: &Sandbox) -> PathBuf {
    let dir = sb.path().join("runs/tiny/step-9");
    common::copy_dir(&common::fixture_in("trained", "tiny-wso"), &dir);
    let path = dir.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["max_position_embeddings"] = json!(2048);
    std::fs::write(&path, cfg.to_string()).unwrap();
    dir
}

/// `ckpt serve` of `ckpt` as model `tiny`, logging at info level to a file.
fn serve(sb: &Sandbox, ckpt: &Path, extra: &[&str]) -> common::Served {
    let log = sb.path().join(format!("serve-{}.log", extra.len()));
    let args = [arg(ckpt), "--model-name", "tiny"];
    sb.serve_logged(args.into_iter().chain(extra.iter().copied()), &log)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = client().post(url).json(body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// The `data:` events of a streamed answer; the last must be `[DONE]`.
fn events(url: &str, body: &Value) -> Vec<Value> {
    let r = client().post(url).json(body).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    BufReader::new(r).read_to_string(&mut text).unwrap();
    let data: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("{e:?}")))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// The content of a streamed chat answer's chunks, put together.
fn chat_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

#[test]
fn streamed_answers_are_the_answers_in_pieces() {
    let sb = Sandbox::new();
    let server = serve(&sb, &tiny(&sb), &[]);
    let chat_url = format!("{}/chat/completions", server.url);
    let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "Tell me about the river."}],
        "max_tokens": 40, "temperature": 0});
    let (status, whole) = post(&chat_url, &body);
    assert_eq!(status, 200, "{whole}");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = events(&chat_url, &streamed);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text = chat_text(&chunks);
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(
        finish["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], whole["usage"]);
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null()));

    // Completions, with a stop string that ends the text midway.
    let url = format!("{}/completions", server.url);
    let body = json!({"prompt": "The stone", "max_tokens": 30, "temperature": 0});
    let (_, full) = post(&url, &body);
    let full_text = full["choices"][0]["text"].as_str().unwrap().to_string();
    let stop: String = full_text.chars().skip(6).take(3).collect();
    for body in [
        body.clone(),
        json!({"prompt": "The stone", "max_tokens": 30, "temperature": 0, "stop": [stop]}),
    ] {
        let (_, whole) = post(&url, &body);
        let mut s = body.clone();
        s["stream"] = json!(true);
        let chunks = events(&url, &s);
        let text: String = chunks
            .iter()
            .map(|c| c["choices"][0]["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            text,
            whole["choices"][0]["text"].as_str().unwrap(),
            "{body}"
        );
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            whole["choices"][0]["finish_reason"]
        );
    }
}

#[test]
fn sampling_is_seeded_and_choices_are_indexed() {
    let sb = Sandbox::new();
    let server = serve(&sb, &tiny(&sb), &[]);
    let url = format!("{}/completions", server.url);
    let text = |body: Value| -> Vec<String> {
        let (status, r) = post(&url, &body);
        assert_eq!(status, 200, "{r}");
        r["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect()
    };
    let seeded =
        json!({"prompt": "The bird", "max_tokens": 24, "temperature": 1.3, "seed": 7, "n": 3});
    let a = text(seeded.clone());
    assert_eq!(a, text(seeded.clone()), "same seed, same texts");
    assert_eq!(a.len(), 3);
    assert!(a[0] != a[1] || a[1] != a[2], "the choices differ: {a:?}");
    let mut other = seeded.clone();
    other["seed"] = json!(8);
    assert_ne!(a, text(other));
    // Temperature 0 is greedy, seed or not; top_k 1 too.
    let greedy = text(json!({"prompt": "The bird", "max_tokens": 24, "temperature": 0}));
    assert_eq!(
        greedy,
        text(json!({"prompt": "The bird", "max_tokens": 24, "temperature": 0, "seed": 3}))
    );
    assert_eq!(
        greedy,
        text(
            json!({"prompt": "The bird", "max_tokens": 24, "temperature": 1, "top_k": 1, "seed": 3})
        )
    );

    // Two prompts x two choices: indices prompt-major.
    let (_, r) = post(
        &url,
        &json!({"prompt": ["The bird", "The stone"], "n": 2, "max_tokens": 4, "temperature": 0}),
    );
    let idx: Vec<u64> = r["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, [0, 1, 2, 3]);
    assert_eq!(r["choices"][0]["text"], r["choices"][1]["text"]);

    // A sampled token's log-probability is the tempered distribution's: its
    // alternatives (the whole vocabulary) sum to one.
    let (_, r) = post(
        &url,
        &json!({"prompt": "The bird", "max_tokens": 3, "temperature": 0.6, "seed": 1, "logprobs": 320}),
    );
    let lp = &r["choices"][0]["logprobs"];
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        let token = lp["tokens"][i].as_str().unwrap();
        let chosen = lp["token_logprobs"][i].as_f64().unwrap();
        if let Some(v) = top.get(token) {
            // Tokens with the same text collapse to one key: equal or larger mass.
            assert!(v.as_f64().unwrap() >= chosen - 1e-6);
        }
        let mass: f64 = top.values().map(|v| v.as_f64().unwrap().exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "{mass}");
    }
}

#[test]
fn echo_scores_token_id_prompts_as_decoding_does() {
    let sb = Sandbox::new();
    let server = serve(&sb, &tiny(&sb), &[]);
    let url = format!("{}/completions", server.url);
    let tok = ckpt::tokenizer::TextTokenizer::load(
        &common::fixture_in("trained", "tiny-wso"),
        None,
        None,
        None,
    )
    .unwrap();
    // lm-eval's request: the ids of context + continuation, echoed, one token more.
    let ids: Vec<u32> = tok
        .encode("The stone sits by the river and the bird")
        .unwrap();
    let (status, e) = post(
        &url,
        &json!({"prompt": [ids.clone()], "max_tokens": 1, "echo": true, "logprobs": 1,
                "temperature": 0, "seed": 1234}),
    );
    assert_eq!(status, 200, "{e}");
    let lp = &e["choices"][0]["logprobs"];
    let token_logprobs = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(token_logprobs.len(), ids.len() + 1);
    assert!(token_logprobs[0].is_null() && lp["top_logprobs"][0].is_null());
    assert_eq!(lp["text_offset"][0], 0);
    assert_eq!(e["usage"]["prompt_tokens"], ids.len());
    assert_eq!(e["usage"]["completion_tokens"], 1);
    // Alternatives are keyed by text: only a token whose text no other token has can
    // be looked up among them.
    let texts: Vec<String> = (0..tok.vocab_size() as u32)
        .map(|id| tok.decode(&[id]).unwrap())
        .collect();
    let unique = |id: u32| texts.iter().filter(|t| **t == texts[id as usize]).count() == 1;
    // Each prompt token's log-probability in that one forward pass is what a decoding
    // step from the prefix before it gives it (whole vocabulary as alternatives).
    let mut checked = 0;
    for j in (1..ids.len()).filter(|&j| unique(ids[j])) {
        let (_, step) = post(
            &url,
            &json!({"prompt": ids[..j].to_vec(), "max_tokens": 1, "logprobs": 320, "temperature": 0}),
        );
        let top = step["choices"][0]["logprobs"]["top_logprobs"][0]
            .as_object()
            .unwrap()
            .clone();
        let token = lp["tokens"][j].as_str().unwrap();
        let echoed = token_logprobs[j].as_f64().unwrap();
        let stepped = top[token].as_f64().unwrap();
        assert!(
            (echoed - stepped).abs() < 1e-4,
            "token {j} ({token:?}): {echoed} vs {stepped}"
        );
        // lm-eval's greedy check reads the one alternative: the most likely token.
        let best = lp["top_logprobs"][j].as_object().unwrap();
        assert_eq!(best.len(), 1);
        let best = best.values().next().unwrap().as_f64().unwrap();
        let max = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert!((best - max).abs() < 1e-5, "{best} vs {max}");
        assert!(echoed <= best + 1e-6);
        checked += 1;
    }
    assert!(
        checked >= ids.len() / 2,
        "{checked} of {} checked",
        ids.len()
    );
    // `max_tokens: 0` scores without generating.
    let (_, zero) = post(
        &url,
        &json!({"prompt": ids, "max_tokens": 0, "echo": true, "logprobs": 0, "temperature": 0}),
    );
    let zero_lps = zero["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap();
    assert_eq!(zero_lps.as_slice(), &token_logprobs[..ids.len()]);
    assert_eq!(zero["usage"]["completion_tokens"], 0);
}

#[test]
fn a_key_guards_every_route_and_is_never_logged() {
    let sb = Sandbox::new();
    let key = "sk-ckpt-test-key-never-logged";
    let server = serve(&sb, &tiny(&sb), &["--api-key", key]);
    let base = server.url.trim_end_matches("/v1").to_string();
    for url in [format!("{base}/health"), format!("{}/models", server.url)] {
        let r = client().get(&url).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{url}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        let r = client().get(&url).bearer_auth("sk-wrong").send().unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = client().get(&url).bearer_auth(key).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = client()
        .post(format!("{}/completions", server.url))
        .json(&json!({"prompt": "x", "max_tokens": 2}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let health: Value = client()
        .get(format!("{base}/health"))
        .bearer_auth(key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["fingerprint"].as_str().unwrap().len(), 64);
    let log = std::fs::read_to_string(server.log.as_ref().unwrap()).unwrap();
    assert!(!log.contains(key), "{log}");
}

/// Asks the server at `url` (`http://ADDR/v1`) to stream a completion of `body`,
/// reads the first bytes of the answer and hangs up.
fn stream_then_hang_up(url: &str, body: &Value) {
    let addr = url.trim_start_matches("http://").trim_end_matches("/v1");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut body = body.clone();
    body["stream"] = json!(true);
    let body = body.to_string();
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 64];
    let _ = stream.read(&mut first).unwrap();
}

/// Request `i` of the concurrency test: greedy, seeded-sampled, streamed chat and
/// echo-scored requests, with lengths and stop strings that end them at different
/// steps.
fn mixed_request(i: usize) -> (&'static str, Value) {
    let prompt = format!("The river number {i} runs past the stone");
    let max_tokens = 6 + (i * 7) % 40;
    match i % 4 {
        0 => (
            "completions",
            json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}),
        ),
        1 => (
            "chat/completions",
            json!({"messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, "stream": true}),
        ),
        2 => (
            "completions",
            json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.9,
            "seed": i, "stop": ["e"]}),
        ),
        _ => (
            "completions",
            json!({"prompt": prompt, "max_tokens": 3, "temperature": 0,
            "echo": true, "logprobs": 2}),
        ),
    }
}

/// The text of an answer (a streamed one put together), and its log-probabilities.
fn answer_of(url: &str, route: &str, body: &Value) -> (String, Vec<f64>) {
    let url = format!("{url}/{route}");
    if body["stream"] == json!(true) {
        return (chat_text(&events(&url, body)), vec![]);
    }
    let (status, reply) = post(&url, body);
    assert_eq!(status, 200, "{reply}");
    let choice = &reply["choices"][0];
    let logprobs = choice["logprobs"]["token_logprobs"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    (choice["text"].as_str().unwrap().to_string(), logprobs)
}

/// 16 clients at once, decoded together in batches of up to 8 (continuous batching:
/// requests join and leave between steps), get exactly what each gets from a server
/// decoding one request at a time.
#[test]
fn concurrent_clients_decoded_together_get_what_each_gets_alone() {
    let sb = Sandbox::new();
    let ckpt = tiny(&sb);
    let alone = serve(&sb, &ckpt, &["--max-batch", "1"]);
    let together = serve(&sb, &ckpt, &["--max-batch", "8", "--max-queue", "32"]);
    let expected: Vec<_> = (0..16)
        .map(|i| {
            let (route, body) = mixed_request(i);
            answer_of(&alone.url, route, &body)
        })
        .collect();
    let start = std::sync::Arc::new(std::sync::Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let (url, start) = (together.url.clone(), start.clone());
            std::thread::spawn(move || {
                let (route, body) = mixed_request(i);
                start.wait();
                answer_of(&url, route, &body)
            })
        })
        .collect();
    for (i, (handle, (text, logprobs))) in handles.into_iter().zip(&expected).enumerate() {
        let (got_text, got_logprobs) = handle.join().unwrap();
        assert_eq!(&got_text, text, "request {i}: {}", mixed_request(i).1);
        assert_eq!(got_logprobs.len(), logprobs.len(), "request {i}");
        for (a, b) in got_logprobs.iter().zip(logprobs) {
            assert!((a - b).abs() < 1e-4, "request {i}: log-prob {a} vs {b}");
        }
    }
    let health = || -> Value {
        let base = together.url.trim_end_matches("/v1");
        let r = client().get(format!("{base}/health")).send().unwrap();
        r.json().unwrap()
    };
    let health_now = health();
    let batching = &health_now["batching"];
    assert_eq!(batching["max_batch"], 8, "{health_now}");
    let peak = batching["peak_batch"].as_u64().unwrap();
    assert!(
        peak > 1 && peak <= 8,
        "requests were not decoded together: {health_now}"
    );

    // A streaming client that hangs up after its first event leaves the batch.
    let long = json!({"prompt": "The river", "max_tokens": 1500, "temperature": 0});
    let started = Instant::now();
    assert_eq!(post(&format!("{}/completions", together.url), &long).0, 200);
    let full = started.elapsed();
    stream_then_hang_up(&together.url, &long);
    let started = Instant::now();
    loop {
        if health()["batching"]["running"] == 0 {
            break;
        }
        assert!(
            started.elapsed() < full / 2,
            "the abandoned request still runs after {:?} (a full generation takes {full:?})",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_full_queue_is_503_and_a_client_that_leaves_frees_its_slot() {
    let sb = Sandbox::new();
    let server = serve(&sb, &tiny(&sb), &["--max-batch", "1", "--max-queue", "1"]);
    let url = format!("{}/completions", server.url);
    let long = json!({"prompt": "The river", "max_tokens": 1500, "temperature": 0});
    let started = Instant::now();
    let (status, _) = post(&url, &long);
    assert_eq!(status, 200);
    let full = started.elapsed();

    // One running, one waiting, the rest refused.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (url, long) = (url.clone(), long.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30 * i));
                let r = client().post(&url).json(&long).send().unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), retry)
            })
        })
        .collect();
    let answers: Vec<(u16, Option<String>)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!refused.is_empty(), "{answers:?}");
    assert!(refused.iter().all(|(_, r)| r.as_deref() == Some("1")));
    assert!(answers.iter().any(|(s, _)| *s == 200));

    // A streaming client reads one event and hangs up: the worker stops generating.
    stream_then_hang_up(&server.url, &long);
    let started = Instant::now();
    let (status, _) = post(
        &url,
        &json!({"prompt": "x", "max_tokens": 1, "temperature": 0}),
    );
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < full / 2,
        "the next request waited {:?} (a full generation takes {full:?})",
        started.elapsed()
    );
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let sb = Sandbox::new();
    let server = serve(&sb, &tiny(&sb), &[]);
    let completions = format!("{}/completions", server.url);
    let chat = format!("{}/chat/completions", server.url);
    let huge = "stone ".repeat(10 * 1024 * 1024 / 6);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            &completions,
            json!({"prompt": "x", "temperature": "hot"}),
            "temperature",
        ),
        (
            &completions,
            json!({"prompt": "x", "max_tokens": -1}),
            "max_tokens",
        ),
        (
            &completions,
            json!({"prompt": "x", "max_tokens": 1_000_000}),
            "max_tokens",
        ),
        (&completions, json!({"prompt": "x", "top_p": 0}), "top_p"),
        (&completions, json!({"prompt": "x", "n": 0}), "n"),
        (
            &completions,
            json!({"prompt": [[1, 2, 999_999]]}),
            "vocabulary",
        ),
        (&completions, json!({"prompt": []}), "prompt"),
        (&completions, json!({"prompt": huge}), "context length"),
        (
            &completions,
            json!({"prompt": "x ".repeat(3000)}),
            "context length",
        ),
        (&chat, json!({"messages": []}), "messages"),
        (
            &chat,
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "role",
        ),
        (
            &chat,
            json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}),
            "logprobs",
        ),
    ];
    for (url, body, needle) in cases {
        let (status, e) = post(url, &body);
        assert_eq!(status, 400, "{needle}: {e}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle}: {message}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
    }
    let r = client()
        .post(&completions)
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (status, r) = post(
        &completions,
        &json!({"prompt": "The stone", "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(status, 200, "{r}");
}
