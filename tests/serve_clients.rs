//! `ckpt serve` answers what real clients sent it, without Python: the exchanges
//! lm-evaluation-harness 0.4.13 (`local-completions`) and the OpenAI Python SDK had with
//! it, recorded by scripts/check_serve_clients.py in tests/fixtures/serve_clients, are
//! replayed against a fresh `ckpt serve` on the same checkpoint (loopback only).
//!
//! Every answer must have the recorded structure (the same keys and JSON types, in
//! OpenAI's format), the same tokens and text, and log-probabilities within 1e-5 of the
//! recorded ones (every recorded request is greedy or seeded); only `id` and `created`
//! may differ. Streams are read as Server-Sent Events (`data: ` lines, `[DONE]` last),
//! and their pieces must concatenate to the recorded text. lm-eval's requests are also
//! read as lm-eval reads them (`sum(token_logprobs[ctxlen:-1])`) and must give the
//! log-likelihood lm-eval recorded and `ckpt eval`'s. The summary's claim (lm-eval vs
//! `ckpt eval`: max difference, metrics) is checked so that it cannot regress silently.

mod common;

use common::{arg, Sandbox};
use serde_json::Value;
use std::path::PathBuf;

/// How far a replayed log-probability may be from the recorded one.
const TOLERANCE: f64 = 1e-5;
/// How far lm-eval's log-likelihoods may be from `ckpt eval`'s (the claim's tolerance).
const LL_TOLERANCE: f64 = 1e-4;
/// The check of the summary that the stop-token probe test covers.
const PROBE_CHECK: &str =
    "lm-eval: a continuation the model ends with EOS is scored whole (stop-token probe)";
const REGENERATE: &str =
    "regenerate with ~/.venvs/ckpt-ref/bin/python scripts/check_serve_clients.py";

fn fixture(name: &str) -> PathBuf {
    common::fixture_in("serve_clients", name)
}

fn exchanges() -> Vec<Value> {
    std::fs::read_to_string(fixture("exchanges.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn summary() -> Value {
    serde_json::from_slice(&std::fs::read(fixture("summary.json")).unwrap()).unwrap()
}

/// `ckpt serve CHECKPOINT --port 0 --model-name NAME`, killed when dropped.
/// A served checkpoint in a sandbox of its own (the process goes before the sandbox).
struct Server {
    /// `http://127.0.0.1:PORT`, without `/v1` (the recorded paths have it).
    base: String,
    _served: common::Served,
    _sandbox: Sandbox,
}

fn serve(checkpoint: &str, name: &str) -> Server {
    let sandbox = Sandbox::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(checkpoint);
    let served = sandbox.serve([arg(&dir), "--model-name", name]);
    Server {
        base: served.base().to_string(),
        _served: served,
        _sandbox: sandbox,
    }
}

/// A live answer: a JSON body, or the data of each Server-Sent Event.
enum Answer {
    Json(Value),
    Events(Vec<String>),
}

impl Answer {
    fn json(&self) -> &Value {
        match self {
            Answer::Json(v) => v,
            Answer::Events(_) => panic!("a stream where a JSON body was expected"),
        }
    }
}

/// Sends one recorded request again; checks the status.
fn replay(server: &Server, exchange: &Value) -> Answer {
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap();
    let method =
        reqwest::Method::from_bytes(exchange["method"].as_str().unwrap().as_bytes()).unwrap();
    let url = format!("{}{}", server.base, exchange["path"].as_str().unwrap());
    let mut request = client.request(method, url);
    if !exchange["request"].is_null() {
        request = request.json(&exchange["request"]);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let streamed = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let text = response.text().unwrap();
    assert_eq!(
        Some(status as u64),
        exchange["status"].as_u64(),
        "{}: {text}",
        exchange["request"]
    );
    if streamed {
        assert!(
            exchange["stream"].is_string(),
            "a stream where the recorded answer was a body: {text}"
        );
        Answer::Events(events(&text))
    } else {
        assert!(
            exchange["stream"].is_null(),
            "a body where the recorded answer was a stream: {text}"
        );
        Answer::Json(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    }
}

/// The data of each event of a Server-Sent Events stream; `[DONE]` must be the last
/// and only there.
fn events(stream: &str) -> Vec<String> {
    let data: Vec<String> = stream
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("an event that is not `data: `: {e:?}"))
                .to_string()
        })
        .collect();
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "the stream must end with [DONE]: {stream}"
    );
    assert_eq!(
        data.iter().filter(|d| *d == "[DONE]").count(),
        1,
        "{stream}"
    );
    data
}

/// The JSON chunks of a stream (all but `[DONE]`).
fn chunks(events: &[String]) -> Vec<Value> {
    events[..events.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

/// Where a live answer differs from the recorded one: keys and JSON types must match,
/// strings, integers, booleans and nulls be equal, floats within TOLERANCE; `id` and
/// `created` are compared by type only.
fn differences(recorded: &Value, live: &Value, path: &str, out: &mut Vec<String>) {
    let key = path.rsplit('.').next().unwrap_or_default();
    match (recorded, live) {
        (Value::Object(a), Value::Object(b)) => {
            let (ka, kb): (Vec<_>, Vec<_>) = (a.keys().collect(), b.keys().collect());
            let (mut sa, mut sb) = (ka.clone(), kb.clone());
            sa.sort();
            sb.sort();
            if sa != sb {
                out.push(format!("{path}: keys {ka:?} recorded, {kb:?} now"));
                return;
            }
            for (k, v) in a {
                differences(v, &b[k], &format!("{path}.{k}"), out);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!(
                    "{path}: {} items recorded, {} now",
                    a.len(),
                    b.len()
                ));
                return;
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (Value::String(_), Value::String(_)) if key == "id" => {}
        (Value::Number(a), Value::Number(b)) if key == "created" => {
            if !(a.is_u64() && b.is_u64()) {
                out.push(format!("{path}: {a} recorded, {b} now"));
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            let ok = if a.is_f64() || b.is_f64() {
                a.is_f64()
                    && b.is_f64()
                    && (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= TOLERANCE
            } else {
                a == b
            };
            if !ok {
                out.push(format!("{path}: {a} recorded, {b} now"));
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} recorded, {b} now")),
    }
}

fn assert_same(recorded: &Value, live: &Value, what: &str) {
    let mut diffs = Vec::new();
    differences(recorded, live, "$", &mut diffs);
    let live: String = live.to_string().chars().take(1500).collect();
    assert!(
        diffs.is_empty(),
        "{what}: the answer differs from the recorded one ({REGENERATE} if that is meant):\n  {}\nnow: {live}",
        diffs[..diffs.len().min(12)].join("\n  ")
    );
}

// -- OpenAI's format ------------------------------------------------------------------

fn is_uint(v: &Value) -> bool {
    v.as_u64().is_some()
}

fn is_num(v: &Value) -> bool {
    v.is_number()
}

fn assert_usage(usage: &Value, what: &str) {
    let (p, c, t) = (
        usage["prompt_tokens"].as_u64(),
        usage["completion_tokens"].as_u64(),
        usage["total_tokens"].as_u64(),
    );
    assert!(
        p.is_some() && c.is_some() && t == Some(p.unwrap() + c.unwrap()),
        "{what}: usage {usage}"
    );
}

/// The envelope every answer and chunk has.
fn assert_envelope(v: &Value, object: &str, name: &str) {
    assert_eq!(v["object"], object, "{v}");
    assert!(v["id"].is_string() && is_uint(&v["created"]), "{v}");
    assert_eq!(v["model"], name, "{v}");
    assert!(
        v["system_fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("fp_")),
        "{v}"
    );
    assert!(v["choices"].is_array(), "{v}");
}

fn assert_finish(choice: &Value) {
    assert!(
        matches!(choice["finish_reason"].as_str(), Some("stop" | "length")),
        "{choice}"
    );
}

/// The legacy log-probabilities of a completion: parallel arrays of tokens, their
/// log-probabilities (the first null with echo), alternatives and text offsets.
fn assert_legacy_logprobs(lp: &Value, echo: bool) {
    let tokens = lp["tokens"].as_array().unwrap_or_else(|| panic!("{lp}"));
    let logprobs = lp["token_logprobs"].as_array().unwrap();
    let top = lp["top_logprobs"].as_array().unwrap();
    let offsets = lp["text_offset"].as_array().unwrap();
    assert!(
        logprobs.len() == tokens.len()
            && top.len() == tokens.len()
            && offsets.len() == tokens.len(),
        "{lp}"
    );
    assert!(tokens.iter().all(Value::is_string), "{lp}");
    assert!(offsets.iter().all(is_uint), "{lp}");
    for (i, (l, t)) in logprobs.iter().zip(top).enumerate() {
        if echo && i == 0 {
            assert!(
                l.is_null() && t.is_null(),
                "the first echoed token has no log-probability: {lp}"
            );
        } else {
            assert!(is_num(l), "{lp}");
            let alternatives = t.as_object().unwrap_or_else(|| panic!("{lp}"));
            assert!(alternatives.values().all(is_num), "{lp}");
        }
    }
}

fn assert_completion(v: &Value, request: &Value, name: &str) {
    assert_envelope(v, "text_completion", name);
    let echo = request["echo"].as_bool().unwrap_or(false);
    for choice in v["choices"].as_array().unwrap() {
        assert!(
            is_uint(&choice["index"]) && choice["text"].is_string(),
            "{choice}"
        );
        assert_finish(choice);
        match request.get("logprobs").filter(|l| !l.is_null()) {
            Some(_) => assert_legacy_logprobs(&choice["logprobs"], echo),
            None => assert!(choice["logprobs"].is_null(), "{choice}"),
        }
        if echo {
            if let Some(prompt) = request["prompt"].as_str() {
                assert!(
                    choice["text"].as_str().unwrap().starts_with(prompt),
                    "{choice}"
                );
            }
        }
    }
    assert_usage(&v["usage"], "completion");
}

/// One token of the chat format's log-probabilities.
fn assert_chat_token(t: &Value) {
    assert!(t["token"].is_string() && is_num(&t["logprob"]), "{t}");
    let bytes = t["bytes"].as_array().unwrap_or_else(|| panic!("{t}"));
    let spelled: Vec<u8> = bytes.iter().map(|b| b.as_u64().unwrap() as u8).collect();
    assert_eq!(spelled, t["token"].as_str().unwrap().as_bytes(), "{t}");
}

fn assert_chat_logprobs(lp: &Value) {
    for t in lp["content"].as_array().unwrap_or_else(|| panic!("{lp}")) {
        assert_chat_token(t);
        t["top_logprobs"]
            .as_array()
            .unwrap_or_else(|| panic!("{t}"))
            .iter()
            .for_each(assert_chat_token);
    }
}

fn assert_chat(v: &Value, name: &str) {
    assert_envelope(v, "chat.completion", name);
    for choice in v["choices"].as_array().unwrap() {
        assert!(is_uint(&choice["index"]), "{choice}");
        assert_eq!(choice["message"]["role"], "assistant", "{choice}");
        assert!(choice["message"]["content"].is_string(), "{choice}");
        assert_finish(choice);
        if !choice["logprobs"].is_null() {
            assert_chat_logprobs(&choice["logprobs"]);
        }
    }
    assert_usage(&v["usage"], "chat");
}

/// A stream's chunks: the envelope on each, `usage` null on all but the last when asked
/// for (the last then has no choices), one finishing chunk per choice. Returns the text
/// the pieces spell.
fn assert_stream(chunks: &[Value], request: &Value, name: &str) -> String {
    let chat = request.get("messages").is_some();
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let include_usage = request["stream_options"]["include_usage"] == true;
    let mut text = String::new();
    let mut finished = 0;
    for (i, c) in chunks.iter().enumerate() {
        assert_envelope(c, object, name);
        let last = i + 1 == chunks.len();
        if include_usage && last {
            assert_eq!(c["choices"], Value::Array(vec![]), "{c}");
            assert_usage(&c["usage"], "the last chunk");
            continue;
        }
        if include_usage {
            assert!(c["usage"].is_null(), "usage before the last chunk: {c}");
        }
        for choice in c["choices"].as_array().unwrap() {
            assert!(is_uint(&choice["index"]), "{choice}");
            if !choice["finish_reason"].is_null() {
                assert_finish(choice);
                finished += 1;
            }
            let piece = if chat {
                let delta = &choice["delta"];
                assert!(delta.is_object(), "{choice}");
                if !delta["role"].is_null() {
                    assert_eq!(delta["role"], "assistant", "{choice}");
                }
                if !choice["logprobs"].is_null() {
                    assert_chat_logprobs(&choice["logprobs"]);
                }
                &delta["content"]
            } else {
                &choice["text"]
            };
            text.push_str(piece.as_str().unwrap_or_default());
        }
    }
    assert_eq!(
        finished,
        request["n"].as_u64().unwrap_or(1),
        "one finishing chunk per choice"
    );
    text
}

fn assert_models(v: &Value, name: &str) {
    assert_eq!(v["object"], "list", "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v}");
    assert_eq!(data[0]["id"], name, "{v}");
    assert_eq!(data[0]["object"], "model", "{v}");
    assert!(
        is_uint(&data[0]["created"]) && data[0]["owned_by"].is_string(),
        "{v}"
    );
}

/// Checks one live answer against OpenAI's format and the recorded answer; returns the
/// text a stream spelled (empty otherwise).
fn check_exchange(exchange: &Value, answer: &Answer) -> String {
    let name = exchange["model_name"].as_str().unwrap();
    let request = &exchange["request"];
    let what = format!(
        "{} {} {}",
        exchange["client"], exchange["method"], exchange["path"]
    );
    match answer {
        Answer::Json(v) => {
            match exchange["path"].as_str().unwrap() {
                "/v1/models" => assert_models(v, name),
                "/v1/completions" => assert_completion(v, request, name),
                "/v1/chat/completions" => assert_chat(v, name),
                other => panic!("no check for {other}"),
            }
            assert_same(&exchange["response"], v, &what);
            String::new()
        }
        Answer::Events(data) => {
            let live = chunks(data);
            let text = assert_stream(&live, request, name);
            let recorded_events = events(exchange["stream"].as_str().unwrap());
            let recorded = chunks(&recorded_events);
            assert_eq!(
                text,
                assert_stream(&recorded, request, name),
                "{what}: the streamed text"
            );
            assert_same(&Value::Array(recorded), &Value::Array(live), &what);
            text
        }
    }
}

/// What lm-eval reads from an answer to one of its requests: the prompt's tokens and
/// one generated token, of which it sums `token_logprobs[ctxlen:-1]`; and whether each
/// of those tokens was the best alternative.
fn lm_eval_reads(exchange: &Value, answer: &Value) -> (f64, bool) {
    let prompt = exchange["request"]["prompt"][0].as_array().unwrap();
    let ctxlen = exchange["lm_eval"]["ctxlen"].as_u64().unwrap() as usize;
    let lp = &answer["choices"][0]["logprobs"];
    let logprobs = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(
        logprobs.len(),
        prompt.len() + 1,
        "lm-eval's local-completions sends `echo` with `max_tokens: 1` and drops the last \
         token of the answer: it must be the prompt's {} tokens and one generated token, \
         not {} (finish_reason {}, usage {})",
        prompt.len(),
        logprobs.len(),
        answer["choices"][0]["finish_reason"],
        answer["usage"]
    );
    let range = ctxlen..logprobs.len() - 1;
    let ll = logprobs[range.clone()]
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    let top = lp["top_logprobs"].as_array().unwrap();
    let greedy = range.clone().all(|i| {
        let best = top[i]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::NEG_INFINITY, f64::max);
        logprobs[i].as_f64().unwrap() == best
    });
    (ll, greedy)
}

#[test]
fn lm_eval_requests_replayed_give_lm_eval_and_ckpt_eval_log_likelihoods() {
    let all = exchanges();
    let recorded: Vec<&Value> = all.iter().filter(|e| e["client"] == "lm-eval").collect();
    assert!(recorded.len() >= 2, "no lm-eval exchanges in the fixture");
    let mut tasks: Vec<&str> = recorded
        .iter()
        .map(|e| e["lm_eval"]["task"].as_str().unwrap())
        .collect();
    tasks.dedup();
    assert!(tasks.len() >= 2, "{tasks:?}");
    let server = serve(
        recorded[0]["checkpoint"].as_str().unwrap(),
        recorded[0]["model_name"].as_str().unwrap(),
    );
    for exchange in recorded {
        let answer = replay(&server, exchange);
        check_exchange(exchange, &answer);
        let what = &exchange["lm_eval"];
        let (ll, greedy) = lm_eval_reads(exchange, answer.json());
        for reference in ["loglikelihood", "ckpt_eval"] {
            let expected = what[reference].as_f64().unwrap();
            assert!(
                (ll - expected).abs() < LL_TOLERANCE,
                "{what}: lm-eval would read {ll} now, {reference} was {expected}"
            );
        }
        assert_eq!(Some(greedy), what["is_greedy"].as_bool(), "{what}");
    }
}

#[test]
fn openai_sdk_exchanges_replayed_give_the_same_answers() {
    let all = exchanges();
    let recorded: Vec<&Value> = all
        .iter()
        .filter(|e| e["client"].as_str().unwrap().starts_with("openai:"))
        .collect();
    let by_client = |c: &str| -> Vec<&Value> {
        recorded
            .iter()
            .copied()
            .filter(|e| e["client"] == c)
            .collect()
    };
    for client in [
        "openai:models",
        "openai:chat",
        "openai:chat-stream",
        "openai:echo",
        "openai:completion",
        "openai:completion-stream",
        "openai:seeded",
    ] {
        assert!(
            !by_client(client).is_empty(),
            "no {client} exchange recorded"
        );
    }
    let server = serve(
        recorded[0]["checkpoint"].as_str().unwrap(),
        recorded[0]["model_name"].as_str().unwrap(),
    );
    let mut answers = std::collections::BTreeMap::new();
    for exchange in &recorded {
        let answer = replay(&server, exchange);
        let streamed = check_exchange(exchange, &answer);
        answers
            .entry(exchange["client"].as_str().unwrap())
            .or_insert_with(Vec::new)
            .push((answer, streamed));
    }
    // The streamed chat is the chat, in pieces; its usage is the chat's.
    let chat = answers["openai:chat"][0].0.json();
    let (stream, streamed) = &answers["openai:chat-stream"][0];
    assert_eq!(
        streamed.as_str(),
        chat["choices"][0]["message"]["content"].as_str().unwrap(),
        "the streamed deltas concatenated"
    );
    let Answer::Events(events) = stream else {
        panic!("the chat stream was not streamed")
    };
    let chunks = chunks(events);
    assert_eq!(chunks.last().unwrap()["usage"], chat["usage"]);
    let streamed_tokens: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter_map(|c| c["logprobs"]["content"].as_array())
        .flatten()
        .map(|t| &t["token"])
        .collect();
    let tokens: Vec<&Value> = chat["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["token"])
        .collect();
    assert_eq!(streamed_tokens, tokens, "the streamed chat's tokens");
    // The streamed completion is the completion.
    let completion = answers["openai:completion"][0].0.json();
    assert_eq!(
        answers["openai:completion-stream"][0].1.as_str(),
        completion["choices"][0]["text"].as_str().unwrap()
    );
    // A seed gives the same sample every time.
    let seeded: Vec<&Value> = answers["openai:seeded"]
        .iter()
        .map(|(a, _)| &a.json()["choices"][0]["text"])
        .collect();
    assert!(
        seeded.len() >= 2 && seeded.iter().all(|t| *t == seeded[0]),
        "{seeded:?}"
    );
    // The echo gives every token, the prompt's first.
    let echo = answers["openai:echo"][0].0.json();
    let lp = &echo["choices"][0]["logprobs"];
    let spelled: String = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(spelled, echo["choices"][0]["text"].as_str().unwrap());
    let usage = &echo["usage"];
    assert_eq!(
        lp["tokens"].as_array().unwrap().len() as u64,
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
}

/// The committed claim: lm-eval's local-completions through `ckpt serve` scores as
/// `ckpt eval` does, with the client versions named.
#[test]
fn summary_claims_lm_eval_parity_with_named_versions() {
    let s = summary();
    assert_eq!(s["versions"]["lm_eval"], "0.4.13", "{s}");
    for v in ["openai", "torch", "transformers"] {
        assert!(
            s["versions"][v].as_str().is_some_and(|x| !x.is_empty()),
            "{v}"
        );
    }
    let lm = &s["lm_eval"];
    assert_eq!(lm["model"], "local-completions");
    assert!(lm["requests"].as_u64().unwrap() > 0, "{lm}");
    let max = lm["max_abs_diff"].as_f64().unwrap();
    assert!(max < LL_TOLERANCE, "lm-eval vs ckpt eval: max |dll| {max}");
    assert_eq!(s["metrics_equal"], true, "{}", s["metrics"]);
    let metrics = s["metrics"].as_object().unwrap();
    assert_eq!(metrics.len(), lm["tasks"].as_array().unwrap().len());
    for (task, ms) in metrics {
        assert!(ms.as_object().unwrap().contains_key("acc,none"), "{task}");
        for (metric, pair) in ms.as_object().unwrap() {
            assert_eq!(
                pair["lm_eval"], pair["ckpt"],
                "{task} {metric}: lm-eval vs ckpt eval"
            );
        }
    }
    let checks = s["checks"].as_object().unwrap();
    assert!(checks.len() >= 10, "{checks:?}");
    for (name, ok) in checks {
        assert_eq!(ok, true, "check failed when recorded: {name}");
    }
    assert_eq!(s["passed"], true);
}

/// lm-eval reads the log-likelihood of a continuation from an answer of the prompt's
/// tokens and one generated token. When the model's next token is its EOS, that token
/// must still be in the answer (as vLLM and OpenAI's legacy completions report it), or
/// lm-eval drops the continuation's last token instead.
#[test]
fn lm_eval_scores_a_continuation_the_model_ends_with_eos() {
    let s = summary();
    let all = exchanges();
    let exchange = all
        .iter()
        .find(|e| e["client"] == "lm-eval:stop-token-probe")
        .expect("the stop-token probe exchange");
    let server = serve(
        exchange["checkpoint"].as_str().unwrap(),
        exchange["model_name"].as_str().unwrap(),
    );
    let answer = replay(&server, exchange);
    let (ll, _) = lm_eval_reads(exchange, answer.json());
    let reference = exchange["lm_eval"]["transformers"].as_f64().unwrap();
    assert!(
        (ll - reference).abs() < LL_TOLERANCE,
        "lm-eval would read {ll} now, transformers gives {reference}"
    );
    check_exchange(exchange, &answer);
    assert_eq!(
        s["stop_token_probe"]["passed"], true,
        "{REGENERATE}: {}",
        s["stop_token_probe"]
    );
    assert_eq!(s["checks"][PROBE_CHECK], true);
}
