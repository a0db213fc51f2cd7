//! A client of any OpenAI-compatible server (vLLM, llama.cpp's server, TGI, OpenAI,
//! `ckpt serve`): `POST {base}/v1/chat/completions`, `GET {base}/v1/models`.
//!
//! Calls time out; connection failures, timeouts, malformed answers and the statuses
//! [`crate::http`] retries (408, 429, 5xx) are retried with its policy (what a
//! `Retry-After` asks for, in seconds or as a date, else exponential backoff with
//! jitter); other errors (401, 404, ...) fail at once with the server's message. [`JudgeClient::chat_many`] keeps up to `concurrency` calls in
//! flight and hands each answer to the caller's thread as it arrives, so the caller
//! can commit it before the next one. The API key is sent as a bearer token and never
//! printed: it is kept out of `Debug` and scrubbed from every error message.
//!
//! ```no_run
//! # use ckpt::eval::judge::client::{ClientConfig, JudgeClient};
//! let client = JudgeClient::new(ClientConfig::new("http://127.0.0.1:8000"))?;
//! let choice = client.chat(&serde_json::json!({"model": "m", "max_tokens": 1,
//!     "messages": [{"role": "user", "content": "A or B?"}]}))?;
//! # Ok::<(), ckpt::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::http::{is_retryable, RetryPolicy};
use reqwest::blocking::{Client, Response};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// An API key, kept out of logs.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key in environment variable `var`; `None` when unset or empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(|k| Self(k.trim().to_string()))
    }

    /// A key given directly (tests, other callers).
    pub fn new(key: &str) -> Self {
        Self(key.to_string())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Where and how to call.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's base URL, with or without the trailing `/v1`.
    pub(crate) base_url: String,
    pub(crate) api_key: Option<ApiKey>,
    /// Limit on one call, connection included.
    pub(crate) timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Wait before the first retry; doubled at each next one.
    pub backoff: Duration,
    /// Longest wait between two attempts (a `Retry-After` may ask for more, up to 10 min).
    pub max_backoff: Duration,
}

impl ClientConfig {
    /// Defaults: 120 s timeout, 6 retries from 1 s backoff up to 60 s, no key.
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.to_string(),
            api_key: None,
            timeout: Duration::from_secs(120),
            retries: 6,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// A blocking client, shareable across threads.
pub struct JudgeClient {
    http: Client,
    cfg: ClientConfig,
    base: String,
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    message: String,
    retry: bool,
    retry_after: Option<Duration>,
}

/// Checks a judge's base URL: http(s), a host, and nothing a URL parser rejects. A bad
/// URL must fail here, once, not as a "network error" that is retried.
pub(crate) fn check_base_url(base_url: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::bad_value(
            "--judge-url",
            format!(
                "judge URL {base_url:?}: {why}; expected http://HOST[:PORT][/v1] or https://..."
            ),
        )
    };
    let trimmed = base_url.trim_end_matches('/');
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(bad("not an http:// or https:// URL"));
    }
    let url = reqwest::Url::parse(trimmed).map_err(|e| bad(&e.to_string()))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a base URL takes no query or fragment"));
    }
    Ok(())
}

impl JudgeClient {
    pub fn new(cfg: ClientConfig) -> Result<Self> {
        check_base_url(&cfg.base_url)?;
        let trimmed = cfg.base_url.trim_end_matches('/');
        let base = trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_string();
        let http = Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("ckpt/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Invalid(format!("judge HTTP client: {e}")))?;
        Ok(Self { http, cfg, base })
    }

    /// `{base}/v1/{path}`.
    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.base)
    }

    /// The model ids the server lists.
    pub fn models(&self) -> Result<Vec<String>> {
        let url = self.url("models");
        let body = self.with_retries(&url, || {
            let r = self.authorised(self.http.get(&url)).send();
            self.read(r)
        })?;
        let ids: Vec<String> = body
            .get("data")
            .and_then(Value::as_array)
            .map(|models| {
                models
                    .iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            return Err(Error::network(format!("{url}: the server lists no models")));
        }
        Ok(ids)
    }

    /// The first choice of a chat completion for `body` (the request, model included).
    pub fn chat(&self, body: &Value) -> Result<Value> {
        let url = self.url("chat/completions");
        self.with_retries(&url, || {
            let r = self.authorised(self.http.post(&url).json(body)).send();
            let answer = self.read(r)?;
            match answer.pointer("/choices/0") {
                Some(choice) if choice.is_object() => Ok(choice.clone()),
                _ => Err(Failure {
                    message: format!(
                        "malformed answer (no choices[0]): {}",
                        snippet(&answer.to_string())
                    ),
                    retry: true,
                    retry_after: None,
                }),
            }
        })
    }

    /// Runs [`chat`](Self::chat) on every body with up to `concurrency` calls in
    /// flight; `done(i, choice)` runs on the calling thread as each answer arrives. The
    /// first error (a call out of retries, or from `done`) stops new calls; the calls
    /// in flight finish and are handed to `done`, then the error is returned.
    pub fn chat_many(
        &self,
        bodies: &[Value],
        concurrency: usize,
        done: &mut dyn FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<(usize, Result<Value>)>();
        let workers = concurrency.clamp(1, bodies.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let tx = tx.clone();
                let (next, stop) = (&next, &stop);
                scope.spawn(move || loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(body) = bodies.get(i) else { break };
                    let answer = self.chat(body);
                    if answer.is_err() {
                        // Out of retries: no new call starts, whatever the others do.
                        stop.store(true, Ordering::SeqCst);
                    }
                    if tx.send((i, answer)).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            let mut first_error = None;
            for (i, answer) in rx {
                let outcome = answer.and_then(|choice| done(i, choice));
                if let Err(e) = outcome {
                    stop.store(true, Ordering::SeqCst);
                    first_error.get_or_insert(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    }

    fn authorised(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match &self.cfg.api_key {
            Some(key) => req.bearer_auth(&key.0),
            None => req,
        }
    }

    /// A JSON body from a 2xx answer, or why not.
    fn read(&self, sent: reqwest::Result<Response>) -> std::result::Result<Value, Failure> {
        let response = sent.map_err(|e| Failure {
            message: transport_message(&e),
            retry: true,
            retry_after: None,
        })?;
        let status = response.status();
        let retry_after = crate::http::retry_after(response.headers());
        let text = response.text().map_err(|e| Failure {
            message: format!("reading the answer: {}", transport_message(&e)),
            retry: true,
            retry_after: None,
        })?;
        if !status.is_success() {
            return Err(Failure {
                message: format!("{status}: {}", server_message(&text)),
                retry: is_retryable(status.as_u16()),
                retry_after,
            });
        }
        serde_json::from_str(&text).map_err(|e| Failure {
            message: format!("malformed answer (not JSON: {e}): {}", snippet(&text)),
            retry: true,
            retry_after: None,
        })
    }

    fn with_retries<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut() -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let mut tries = 0u32;
        loop {
            let failure = match attempt() {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            let message = self.scrub(&failure.message);
            if !failure.retry || tries >= self.cfg.retries {
                let after = if tries > 0 {
                    format!(" (after {} attempts)", tries + 1)
                } else {
                    String::new()
                };
                return Err(Error::network(format!("judge {url}: {message}{after}")));
            }
            let policy = RetryPolicy {
                max_retries: self.cfg.retries,
                base_delay: self.cfg.backoff,
                max_delay: self.cfg.max_backoff,
            };
            tries += 1;
            let Some(wait) = policy.wait(tries, failure.retry_after) else {
                return Err(Error::network(format!(
                    "judge {url}: {message} (the server asks to wait more than {} s)",
                    crate::http::MAX_RETRY_AFTER.as_secs()
                )));
            };
            tracing::warn!(
                "judge call failed ({message}); retry {tries}/{} in {:.1} s",
                self.cfg.retries,
                wait.as_secs_f64()
            );
            std::thread::sleep(wait);
        }
    }

    /// `text` with the API key replaced, should a server or library echo it.
    fn scrub(&self, text: &str) -> String {
        match &self.cfg.api_key {
            Some(ApiKey(k)) if !k.is_empty() => text.replace(k.as_str(), "***"),
            _ => text.to_string(),
        }
    }
}

/// The error message of an OpenAI-style error body, else the body's start.
fn server_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_else(|| snippet(body))
}

fn transport_message(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The source chain says why (connection refused, ...); the URL is ours to print.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

/// The first 200 characters of a text, on one line.
fn snippet(text: &str) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    let short: String = one_line.chars().take(200).collect();
    if short.len() < one_line.len() {
        format!("{short}...")
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keys() {
        let c = JudgeClient::new(ClientConfig::new("http://h:1/v1/")).unwrap();
        assert_eq!(c.url("models"), "http://h:1/v1/models");
        let c = JudgeClient::new(ClientConfig::new("https://h")).unwrap();
        assert_eq!(c.url("chat/completions"), "https://h/v1/chat/completions");
        assert!(JudgeClient::new(ClientConfig::new("h:1")).is_err());
        let mut cfg = ClientConfig::new("http://h");
        cfg.api_key = Some(ApiKey::new("sk-secret-123"));
        assert!(!format!("{cfg:?}").contains("sk-secret"));
        let c = JudgeClient::new(cfg).unwrap();
        assert_eq!(c.scrub("bad key sk-secret-123!"), "bad key ***!");
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            server_message(r#"{"error": {"message": "no such model", "type": "x"}}"#),
            "no such model"
        );
        assert_eq!(server_message("plain\ntext"), "plain text");
    }
}
