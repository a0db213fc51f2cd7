//! The OpenAI API subset `ckpt serve` answers, as plain functions from a request
//! (method, path, JSON body) to a status and a JSON body, so they can be tested
//! without sockets:
//!
//! - `GET /v1/models`: the one model served;
//! - `POST /v1/chat/completions`: `messages` rendered with the checkpoint's chat
//!   template; `max_tokens` (or `max_completion_tokens`), `stop`, `logprobs` +
//!   `top_logprobs` (the chat format: `logprobs.content[i].top_logprobs`);
//! - `POST /v1/completions`: a raw `prompt`; `max_tokens` (default 16), `stop`,
//!   `logprobs: k` (the legacy format: `tokens`, `token_logprobs`, `top_logprobs`,
//!   `text_offset`).
//!
//! Decoding is greedy whatever `temperature` / `top_p` say (the results are the
//! model's argmax path, which is what a judge or an evaluation wants); `n` must be 1
//! and streaming is refused. Errors use OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`.

use super::Served;
use crate::chat::Message;
use crate::eval::engine::{Engine, Finish, Generation};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// An answer: HTTP status and JSON body.
pub type Reply = (u16, Value);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A request path without its query and trailing slash, as the routes are written.
pub(super) fn route(path: &str) -> &str {
    path.split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
}

/// Routes one request.
pub fn handle(served: &Served, method: &str, path: &str, body: &[u8]) -> Reply {
    match (method, route(path)) {
        ("GET", "/v1/models" | "/models") => (200, models(&served.name)),
        ("POST", "/v1/chat/completions" | "/chat/completions") => parse(body)
            .and_then(|r| chat(served, r))
            .unwrap_or_else(|e| e),
        ("POST", "/v1/completions" | "/completions") => parse(body)
            .and_then(|r| completion(served, r))
            .unwrap_or_else(|e| e),
        ("GET", "/health" | "") => (200, json!({"status": "ok", "model": served.name})),
        (_, "/v1/models" | "/v1/chat/completions" | "/v1/completions") => error(
            405,
            "invalid_request_error",
            &format!("{method} is not allowed on {path}"),
        ),
        _ => error(404, "not_found_error", &format!("no route {method} {path}")),
    }
}

/// An error in OpenAI's shape.
pub(super) fn error(status: u16, kind: &str, message: &str) -> Reply {
    (
        status,
        json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
    )
}

pub(super) fn bad_request(message: &str) -> Reply {
    error(400, "invalid_request_error", message)
}

pub(super) fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| bad_request(&format!("invalid request body: {e}")))
}

/// The `GET /v1/models` list of the one model `name`.
pub(super) fn models(name: &str) -> Value {
    json!({"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "ckpt"}
    ]})
}

/// A fresh response id: `PREFIX-N`.
pub(super) fn next_id(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// One string or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// A message's content: a string, or parts of which the text ones count.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
}

/// One message of a chat request.
#[derive(Deserialize)]
pub(super) struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

impl ChatMessage {
    /// The message with its text parts joined.
    pub(super) fn into_message(self) -> Message {
        Message {
            role: self.role,
            content: match self.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect(),
            },
        }
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Vec<ChatMessage>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    stop: Option<OneOrMany>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<usize>,
    #[serde(default)]
    stream: bool,
    n: Option<usize>,
}

#[derive(Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    prompt: OneOrMany,
    max_tokens: Option<usize>,
    stop: Option<OneOrMany>,
    logprobs: Option<usize>,
    #[serde(default)]
    echo: bool,
    #[serde(default)]
    stream: bool,
    n: Option<usize>,
}

/// Checks shared by the endpoints: the model is the one served (`name`), one answer,
/// no streaming.
pub(super) fn check_common(
    name: &str,
    model: &Option<String>,
    stream: bool,
    n: Option<usize>,
) -> Result<(), Reply> {
    if let Some(m) = model.as_deref().filter(|m| *m != name) {
        return Err(error(
            404,
            "not_found_error",
            &format!("the model `{m}` does not exist; this server serves `{name}`"),
        ));
    }
    if stream {
        return Err(bad_request("streaming is not supported by ckpt serve"));
    }
    if n.is_some_and(|n| n != 1) {
        return Err(bad_request("only n = 1 is supported (decoding is greedy)"));
    }
    Ok(())
}

/// The roles a chat template renders. Any other (`tool`, a typo, an empty one) would be
/// dropped by the template without a word and the model answer another conversation.
const ROLES: [&str; 3] = ["system", "user", "assistant"];

/// Refuses a message whose role the chat template does not render, naming it.
pub(super) fn check_roles(messages: &[ChatMessage]) -> Result<(), Reply> {
    match messages
        .iter()
        .position(|m| !ROLES.contains(&m.role.as_str()))
    {
        None => Ok(()),
        Some(i) => Err((
            400,
            json!({"error": {
                "message": format!(
                    "messages[{i}].role: {:?} is not a supported role (one of {})",
                    messages[i].role,
                    ROLES.join(", ")
                ),
                "type": "invalid_request_error",
                "param": format!("messages[{i}].role"),
                "code": null,
            }}),
        )),
    }
}

fn chat(served: &Served, req: ChatRequest) -> Result<Reply, Reply> {
    check_common(&served.name, &req.model, req.stream, req.n)?;
    if req.messages.is_empty() {
        return Err(bad_request("messages must not be empty"));
    }
    check_roles(&req.messages)?;
    let messages: Vec<Message> = req
        .messages
        .into_iter()
        .map(ChatMessage::into_message)
        .collect();
    let prompt = served
        .chat
        .render(&messages, true)
        .map_err(|e| bad_request(&e.to_string()))?;
    let top = req.logprobs.then(|| req.top_logprobs.unwrap_or(0));
    let max_tokens = req.max_completion_tokens.or(req.max_tokens);
    let stop = req.stop.map(OneOrMany::into_vec).unwrap_or_default();
    let (generation, prompt_tokens) = run(served, &prompt, max_tokens, &stop, top)?;
    let logprobs = top.map(|k| {
        let content: Vec<Value> = generation
            .tokens
            .iter()
            .map(|t| {
                let mut entry = token_entry(served, t.id, t.logprob.unwrap_or(f32::NAN));
                let alternatives: Vec<Value> = t
                    .top
                    .iter()
                    .take(k)
                    .map(|&(id, lp)| token_entry(served, id, lp))
                    .collect();
                entry["top_logprobs"] = alternatives.into();
                entry
            })
            .collect();
        json!({"content": content})
    });
    let completion_tokens = generation.tokens.len();
    Ok((
        200,
        json!({
            "id": next_id("chatcmpl"),
            "object": "chat.completion",
            "created": unix_time(),
            "model": served.name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": generation.text},
                "logprobs": logprobs,
                "finish_reason": finish_reason(generation.finish),
            }],
            "usage": usage(prompt_tokens, completion_tokens),
        }),
    ))
}

fn completion(served: &Served, req: CompletionRequest) -> Result<Reply, Reply> {
    check_common(&served.name, &req.model, req.stream, req.n)?;
    if req.echo {
        return Err(bad_request("echo is not supported by ckpt serve"));
    }
    let prompts = req.prompt.into_vec();
    let [prompt] = prompts.as_slice() else {
        return Err(bad_request("prompt must be one string"));
    };
    let stop = req.stop.map(OneOrMany::into_vec).unwrap_or_default();
    let (generation, prompt_tokens) = run(
        served,
        prompt,
        Some(req.max_tokens.unwrap_or(16)),
        &stop,
        req.logprobs,
    )?;
    let logprobs = req.logprobs.map(|k| {
        let mut offset = prompt.len();
        let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
        for t in &generation.tokens {
            let text = served.token_text(t.id);
            offsets.push(offset);
            offset += text.len();
            tokens.push(text);
            lps.push(t.logprob.map(f64::from));
            let alternatives: serde_json::Map<String, Value> = t
                .top
                .iter()
                .take(k)
                .map(|&(id, lp)| (served.token_text(id), json!(lp)))
                .collect();
            tops.push(alternatives);
        }
        json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
    });
    let completion_tokens = generation.tokens.len();
    Ok((
        200,
        json!({
            "id": next_id("cmpl"),
            "object": "text_completion",
            "created": unix_time(),
            "model": served.name,
            "choices": [{
                "index": 0,
                "text": generation.text,
                "logprobs": logprobs,
                "finish_reason": finish_reason(generation.finish),
            }],
            "usage": usage(prompt_tokens, completion_tokens),
        }),
    ))
}

/// Greedy generation from a prompt text; a prompt that fills the context is refused.
fn run(
    served: &Served,
    prompt: &str,
    max_tokens: Option<usize>,
    stop: &[String],
    top_logprobs: Option<usize>,
) -> Result<(Generation, usize), Reply> {
    let engine = Engine::new(&served.model, &served.tokenizer);
    if prompt.len() > served.max_prompt_bytes {
        return Err(bad_request(&format!(
            "this model's maximum context length is {} tokens; the prompt has {} bytes, \
             more than any {} tokens can hold",
            engine.max_length,
            prompt.len(),
            engine.max_length
        )));
    }
    let ids = served
        .tokenizer
        .encode_prompt(prompt)
        .map_err(|e| bad_request(&e.to_string()))?;
    let prompt_tokens = ids.len().max(1);
    if prompt_tokens >= engine.max_length {
        return Err(bad_request(&format!(
            "this model's maximum context length is {} tokens; the prompt has {prompt_tokens}",
            engine.max_length
        )));
    }
    let room = engine.max_length - prompt_tokens;
    let max_new = max_tokens.unwrap_or(room);
    let generation = engine
        .generate_ids(ids, stop, max_new, top_logprobs)
        .map_err(|e| error(500, "server_error", &e.to_string()))?;
    Ok((generation, prompt_tokens))
}

fn token_entry(served: &Served, id: u32, logprob: f32) -> Value {
    let text = served.token_text(id);
    json!({"token": text, "logprob": logprob, "bytes": text.as_bytes()})
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

pub(super) fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

pub(super) fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
