//! An OpenAI-compatible judge for tests: an HTTP/1.1 server on loopback (a thread per
//! connection, every answer closes its connection) answering
//! `GET /v1/models` and `POST /v1/chat/completions` in OpenAI's schema, with
//! deterministic log-probabilities: it reads the two answers out of ckpt's judge
//! prompt and prefers the longer one, p(A) = sigmoid((chars(A) - chars(B)) / 20).
//!
//! Faults are queued and consumed one per chat call, in order: an error status, a 429
//! with `Retry-After`, a malformed body, a late answer (the client's timeout), an
//! answer without log-probabilities (the parsed-answer fallback), a 401 that echoes
//! the `Authorization` header (a careless server), or a hang. Every chat call is
//! counted and logged (time, which answer was shown first, the `Authorization` header).

#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the next chat call gets instead of (or before) a normal answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Status(u16),
    RetryAfter(u64),
    Malformed,
    /// Answer normally after this long.
    Delay(Duration),
    NoLogprobs,
    EchoAuth401,
    /// Never answer (until the test ends).
    Hang,
}

/// One chat call as the server saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub answer_a: String,
    pub answer_b: String,
    pub authorization: Option<String>,
    pub fault: Option<Fault>,
}

#[derive(Default)]
struct State {
    faults: Mutex<VecDeque<Fault>>,
    calls: Mutex<Vec<Call>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Delay of every normal answer.
    delay: Mutex<Duration>,
    /// The key every call must carry (401 otherwise), if any.
    key: Mutex<Option<String>>,
}

/// A running judge.
pub struct JudgeServer {
    pub url: String,
    state: Arc<State>,
}

/// The model id the server lists.
pub const MODEL: &str = "test-judge";

impl JudgeServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || serve_connection(&st, stream));
            }
        });
        Self { url, state }
    }

    /// Queues faults for the next chat calls.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.state
            .faults
            .lock()
            .unwrap()
            .extend(faults.iter().cloned());
    }

    /// Every normal answer waits this long.
    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }

    /// Calls without `Authorization: Bearer KEY` get a 401.
    pub fn require_key(&self, key: &str) {
        *self.state.key.lock().unwrap() = Some(key.to_string());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn call_count(&self) -> usize {
        self.state.calls.lock().unwrap().len()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

/// p(first answer better) of two answers.
pub fn p_first(a: &str, b: &str) -> f64 {
    let x = (a.chars().count() as f64 - b.chars().count() as f64) / 20.0;
    1.0 / (1.0 + (-x).exp())
}

/// The two answers of ckpt's built-in judge prompt.
pub fn answers_in(prompt: &str) -> Option<(String, String)> {
    let (_, rest) = prompt.split_once("# Answer A\n\n")?;
    let (a, rest) = rest.split_once("\n\n# Answer B\n\n")?;
    let (b, _) = rest.split_once("\n\n# Your verdict")?;
    Some((a.to_string(), b.to_string()))
}

/// One request: method, path, headers (lower-case names), body.
struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn read_request(stream: &TcpStream) -> Option<HttpRequest> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn serve_connection(state: &State, stream: TcpStream) {
    let Some(request) = read_request(&stream) else {
        return;
    };
    let (status, body, retry_after) = handle(state, &request);
    reply(stream, status, &body, retry_after);
}

fn handle(state: &State, request: &HttpRequest) -> (u16, String, Option<u64>) {
    let (path, body) = (request.path.as_str(), &request.body);
    let authorization = request
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.clone());
    if request.method == "GET" && path == "/v1/models" {
        let models = json!({"object": "list", "data": [{"id": MODEL, "object": "model"}]});
        return (200, models.to_string(), None);
    }
    if path != "/v1/chat/completions" {
        return (
            404,
            r#"{"error": {"message": "no route"}}"#.to_string(),
            None,
        );
    }
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let fault = state.faults.lock().unwrap().pop_front();
    let req: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let content = req
        .pointer("/messages/0/content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (a, b) = answers_in(&content).unwrap_or_default();
    state.calls.lock().unwrap().push(Call {
        at: Instant::now(),
        answer_a: a.clone(),
        answer_b: b.clone(),
        authorization: authorization.clone(),
        fault: fault.clone(),
    });
    let wanted = state.key.lock().unwrap().clone();
    let authorised =
        wanted.is_none_or(|k| authorization.as_deref() == Some(&format!("Bearer {k}")));
    let delay = *state.delay.lock().unwrap();
    let model_ok = req.get("model").and_then(Value::as_str) == Some(MODEL);
    let p = p_first(&a, &b);
    let logprobs = json!({"content": [{
        "token": if p >= 0.5 { "A" } else { "B" },
        "logprob": p.max(1.0 - p).ln(),
        "top_logprobs": [
            {"token": "A", "logprob": p.ln(), "bytes": [65]},
            {"token": "B", "logprob": (1.0 - p).ln(), "bytes": [66]},
            {"token": "Neither", "logprob": -20.0, "bytes": [78]},
        ],
    }]});
    let answer = |logprobs: Value| {
        json!({
            "id": "chatcmpl-test", "object": "chat.completion", "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": if p >= 0.5 { "A" } else { "B" }},
                         "logprobs": logprobs}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        })
        .to_string()
    };
    let (status, text, retry_after) = match fault {
        _ if !model_ok => (404, r#"{"error": {"message": "unknown model"}}"#.to_string(), None),
        Some(Fault::EchoAuth401) => (
            401,
            json!({"error": {"message": format!("Incorrect API key provided: {}", authorization.clone().unwrap_or_default())}}).to_string(),
            None,
        ),
        _ if !authorised => (401, r#"{"error": {"message": "missing or wrong API key"}}"#.to_string(), None),
        Some(Fault::Status(s)) => (s, r#"{"error": {"message": "injected failure"}}"#.to_string(), None),
        Some(Fault::RetryAfter(secs)) => (429, r#"{"error": {"message": "rate limited"}}"#.to_string(), Some(secs)),
        Some(Fault::Malformed) => (200, r#"{"choices": [{"message": "#.to_string(), None),
        Some(Fault::Delay(d)) => {
            std::thread::sleep(d);
            (200, answer(logprobs), None)
        }
        Some(Fault::NoLogprobs) => (200, answer(Value::Null), None),
        Some(Fault::Hang) => {
            std::thread::sleep(Duration::from_secs(600));
            (500, String::new(), None)
        }
        None => {
            std::thread::sleep(delay);
            (200, answer(logprobs), None)
        }
    };
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    (status, text, retry_after)
}

fn reply(mut stream: TcpStream, status: u16, body: &str, retry_after: Option<u64>) {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Error",
    };
    let extra = retry_after
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}
