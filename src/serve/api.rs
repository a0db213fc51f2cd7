//! The OpenAI API subset `ckpt serve` answers, as plain functions from a request
//! (method, path, JSON body) to a status and a JSON body, or to Server-Sent Events, so
//! they can be tested without sockets:
//!
//! - `GET /v1/models`: the one model served, with its weights' fingerprint and context
//!   length; `GET /health`: the same, for probes;
//! - `POST /v1/chat/completions`: `messages` rendered with the checkpoint's chat
//!   template; `max_tokens` (or `max_completion_tokens`), `stop`, `n`, `temperature`,
//!   `top_p`, `top_k`, `seed`, `logprobs` + `top_logprobs` (the chat format), `stream`
//!   (+ `stream_options.include_usage`);
//! - `POST /v1/completions`: `prompt` as a string, strings, token ids or lists of them
//!   (lm-eval's `local-completions` sends ids); `echo` with `logprobs: k` gives the
//!   prompt's own log-probabilities (the first `null`), which is how lm-eval scores a
//!   continuation (`max_tokens` 0 or 1); the legacy format (`tokens`,
//!   `token_logprobs`, `top_logprobs`, `text_offset`); the same sampling and `stream`.
//!
//! `temperature` defaults to 1, as OpenAI's; 0 is greedy. A `seed` makes a request
//! reproducible. Errors use OpenAI's shape, `{"error": {"message", "type", "param",
//! "code"}}`.

use super::decode::{decode, DecodeRequest, Decoded};
use super::sampling::{Chosen, Sampling};
use super::{Events, Served};
use crate::chat::Message;
use crate::eval::engine::Finish;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// An answer: HTTP status and JSON body.
pub(crate) type Reply = (u16, Value);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A request path without its query and trailing slash, as the routes are written.
pub(super) fn route(path: &str) -> &str {
    path.split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
}

/// Routes one request; a streamed answer goes to `events`.
pub(crate) fn handle(
    served: &Served,
    method: &str,
    path: &str,
    body: &[u8],
    events: &Events,
) -> Reply {
    match (method, route(path)) {
        ("GET", "/v1/models" | "/models") => (200, served.models()),
        // The sampling fields are read on their own: errors then name the field (serde
        // loses the path inside a flattened struct).
        ("POST", "/v1/chat/completions" | "/chat/completions") => parse(body)
            .and_then(|r| chat(served, r, parse(body)?, events))
            .unwrap_or_else(|e| e),
        ("POST", "/v1/completions" | "/completions") => parse(body)
            .and_then(|r| completion(served, r, parse(body)?, events))
            .unwrap_or_else(|e| e),
        ("GET", "/health" | "") => (200, served.health()),
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

/// The request body as `T`; an error names the field at fault (`temperature: invalid
/// type: string "hot", expected f32`).
pub(super) fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Reply> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = format!("invalid request body: {}", e.inner());
        if path.is_empty() || path == "." {
            bad_request(&message)
        } else {
            invalid(&path, &message)
        }
    })
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

/// A completion's prompt: text or token ids, one or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

/// One prompt, as text or as the ids a client tokenized itself (lm-eval does).
enum PromptInput {
    Text(String),
    Ids(Vec<u32>),
}

impl Prompt {
    /// The prompts; an empty list (of texts or of ids) holds none.
    fn into_inputs(self) -> Vec<PromptInput> {
        match self {
            Prompt::Ids(ids) if ids.is_empty() => vec![],
            Prompt::Text(t) => vec![PromptInput::Text(t)],
            Prompt::Ids(ids) => vec![PromptInput::Ids(ids)],
            Prompt::Texts(ts) => ts.into_iter().map(PromptInput::Text).collect(),
            Prompt::IdLists(ls) => ls.into_iter().map(PromptInput::Ids).collect(),
        }
    }
}

/// The sampling fields both endpoints take.
#[derive(Deserialize, Default)]
struct SamplingFields {
    temperature: Option<f32>,
    top_p: Option<f32>,
    /// vLLM's extension; -1 or 0: no limit.
    top_k: Option<i64>,
    seed: Option<i64>,
    n: Option<usize>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Most choices one request may ask for.
const MAX_N: usize = 16;

impl SamplingFields {
    /// The checked sampling settings and `n`.
    fn check(&self) -> Result<(Sampling, usize), Reply> {
        let temperature = self.temperature.unwrap_or(1.0);
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(invalid("temperature", "must be a number >= 0"));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(invalid("top_p", "must be in (0, 1]"));
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => None,
            Some(k) if k > 0 => Some(k as usize),
            Some(_) => return Err(invalid("top_k", "must be -1 (no limit) or at least 1")),
        };
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(invalid("n", &format!("must be between 1 and {MAX_N}")));
        }
        let sampling = Sampling {
            temperature,
            top_p,
            top_k,
            seed: self.seed.map(|s| s as u64),
        };
        Ok((sampling, n))
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// A 400 naming the field at fault.
fn invalid(param: &str, why: &str) -> Reply {
    (
        400,
        json!({"error": {"message": format!("{param}: {why}"), "type": "invalid_request_error", "param": param, "code": null}}),
    )
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
}

#[derive(Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    prompt: Prompt,
    max_tokens: Option<usize>,
    stop: Option<OneOrMany>,
    logprobs: Option<usize>,
    #[serde(default)]
    echo: bool,
}

/// The model asked for must be the one served (`name`).
pub(super) fn check_model(name: &str, model: &Option<String>) -> Result<(), Reply> {
    if let Some(m) = model.as_deref().filter(|m| *m != name) {
        return Err(error(
            404,
            "not_found_error",
            &format!("the model `{m}` does not exist; this server serves `{name}`"),
        ));
    }
    Ok(())
}

/// Checks for handlers that answer one choice, not streamed (the oracle judge).
pub(super) fn check_common(
    name: &str,
    model: &Option<String>,
    stream: bool,
    n: Option<usize>,
) -> Result<(), Reply> {
    check_model(name, model)?;
    if stream {
        return Err(bad_request("streaming is not supported by this judge"));
    }
    if n.is_some_and(|n| n != 1) {
        return Err(bad_request("only n = 1 is supported"));
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

fn chat(
    served: &Served,
    req: ChatRequest,
    fields: SamplingFields,
    events: &Events,
) -> Result<Reply, Reply> {
    check_model(&served.name, &req.model)?;
    let (sampling, n) = fields.check()?;
    if req.messages.is_empty() {
        return Err(bad_request("messages must not be empty"));
    }
    check_roles(&req.messages)?;
    // OpenAI stops at 20 alternatives; a judge reading A/B preferences may want all.
    let vocab = served.model.config().vocab_size;
    let top = match (req.logprobs, req.top_logprobs) {
        (_, Some(k)) if k > vocab => {
            return Err(invalid(
                "top_logprobs",
                &format!("must be at most the vocabulary size {vocab}"),
            ))
        }
        (false, Some(_)) => return Err(invalid("top_logprobs", "needs logprobs: true")),
        (true, k) => Some(k.unwrap_or(0)),
        (false, None) => None,
    };
    let messages: Vec<Message> = req
        .messages
        .into_iter()
        .map(ChatMessage::into_message)
        .collect();
    let prompt = served
        .chat
        .render(&messages, true)
        .map_err(|e| bad_request(&e.to_string()))?;
    let ids = encode(served, &PromptInput::Text(prompt))?;
    let max_new = max_new(
        served,
        ids.len(),
        req.max_completion_tokens.or(req.max_tokens),
    )?;
    let stop = req.stop.map(OneOrMany::into_vec).unwrap_or_default();
    let stream = ChatStream::new(served, events, &fields);
    let mut choices = Vec::new();
    let mut completion_tokens = 0;
    for index in 0..n {
        let decode_req = DecodeRequest {
            prompt: ids.clone(),
            max_new,
            stop: stop.clone(),
            top_logprobs: top.unwrap_or(0),
            echo: false,
            sampling,
            index: index as u64,
        };
        let out = stream.choice(index, &decode_req, top.is_some())?;
        if out.cancelled {
            return Ok((499, json!({})));
        }
        completion_tokens += out.generated();
        let logprobs = top.map(|k| json!({"content": chat_logprobs(served, &out.tokens, k)}));
        choices.push(json!({
            "index": index,
            "message": {"role": "assistant", "content": out.text},
            "logprobs": logprobs,
            "finish_reason": finish_reason(out.finish),
        }));
    }
    let usage = usage(ids.len(), completion_tokens);
    if stream.on {
        stream.finish(usage);
        return Ok((200, json!({})));
    }
    Ok((
        200,
        json!({
            "id": stream.id,
            "object": "chat.completion",
            "created": stream.created,
            "model": served.name,
            "system_fingerprint": served.system_fingerprint(),
            "choices": choices,
            "usage": usage,
        }),
    ))
}

/// The chat format of generated tokens' log-probabilities.
fn chat_logprobs(served: &Served, tokens: &[Chosen], k: usize) -> Vec<Value> {
    tokens
        .iter()
        .map(|t| {
            let mut entry = token_entry(served, t.id, t.logprob);
            let alternatives: Vec<Value> = t
                .top
                .iter()
                .take(k)
                .map(|&(id, lp)| token_entry(served, id, lp))
                .collect();
            entry["top_logprobs"] = alternatives.into();
            entry
        })
        .collect()
}

/// A chat answer streamed as Server-Sent Events (`chat.completion.chunk`s), or not.
struct ChatStream<'a> {
    served: &'a Served,
    events: &'a Events,
    on: bool,
    include_usage: bool,
    id: String,
    created: u64,
}

impl<'a> ChatStream<'a> {
    fn new(served: &'a Served, events: &'a Events, fields: &SamplingFields) -> Self {
        Self {
            served,
            events,
            on: fields.stream,
            include_usage: fields.include_usage(),
            id: next_id("chatcmpl"),
            created: unix_time(),
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.served.name,
            "system_fingerprint": self.served.system_fingerprint(),
            "choices": choices,
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    /// Generates one choice, streaming its pieces when asked to.
    fn choice(&self, index: usize, req: &DecodeRequest, logprobs: bool) -> Result<Decoded, Reply> {
        let k = req.top_logprobs;
        if self.on {
            let first = json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]);
            if !self.events.send(&self.chunk(first)) {
                return Ok(Decoded::cancelled(String::new()));
            }
        }
        let mut on_text = |piece: &str, tokens: &[Chosen]| {
            if !self.on {
                return true;
            }
            let lp = logprobs.then(|| json!({"content": chat_logprobs(self.served, tokens, k)}));
            let choice = json!([{"index": index, "delta": {"content": piece}, "logprobs": lp, "finish_reason": null}]);
            self.events.send(&self.chunk(choice))
        };
        let out = generate(self.served, req, &mut on_text)?;
        if self.on && !out.cancelled {
            let last = json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": finish_reason(out.finish)}]);
            if !self.events.send(&self.chunk(last)) {
                return Ok(Decoded {
                    cancelled: true,
                    ..out
                });
            }
        }
        Ok(out)
    }

    /// The usage chunk (when asked for) and `[DONE]`.
    fn finish(&self, usage: Value) {
        if self.include_usage {
            let mut c = self.chunk(json!([]));
            c["usage"] = usage;
            self.events.send(&c);
        }
        self.events.done();
    }
}

fn completion(
    served: &Served,
    req: CompletionRequest,
    fields: SamplingFields,
    events: &Events,
) -> Result<Reply, Reply> {
    check_model(&served.name, &req.model)?;
    let (sampling, n) = fields.check()?;
    let vocab = served.model.config().vocab_size;
    if let Some(k) = req.logprobs.filter(|&k| k > vocab) {
        return Err(invalid(
            "logprobs",
            &format!("must be at most the vocabulary size {vocab} (got {k})"),
        ));
    }
    let inputs = req.prompt.into_inputs();
    if inputs.is_empty() {
        return Err(invalid("prompt", "must not be an empty list"));
    }
    let prompts: Vec<Vec<u32>> = inputs
        .iter()
        .map(|p| encode(served, p))
        .collect::<Result<_, _>>()?;
    let stop = req.stop.map(OneOrMany::into_vec).unwrap_or_default();
    let (stream_on, include_usage) = (fields.stream, fields.include_usage());
    let (id, created) = (next_id("cmpl"), unix_time());
    let chunk = |choices: Value| {
        let mut c = json!({"id": id, "object": "text_completion", "created": created,
            "model": served.name, "system_fingerprint": served.system_fingerprint(), "choices": choices});
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for (p, ids) in prompts.iter().enumerate() {
        prompt_tokens += ids.len();
        let max_new = max_new(served, ids.len(), Some(req.max_tokens.unwrap_or(16)))?;
        let prompt_text = match &inputs[p] {
            PromptInput::Text(t) => t.clone(),
            PromptInput::Ids(ids) => served.tokenizer.decode_text(ids).unwrap_or_default(),
        };
        for c in 0..n {
            let index = p * n + c;
            let decode_req = DecodeRequest {
                prompt: ids.clone(),
                max_new,
                stop: stop.clone(),
                top_logprobs: req.logprobs.unwrap_or(0),
                echo: req.echo,
                sampling,
                index: c as u64,
            };
            let mut offset = if req.echo {
                0
            } else {
                prompt_text.chars().count()
            };
            let legacy = |tokens: &[Chosen], offset: &mut usize| {
                req.logprobs
                    .map(|k| completion_logprobs(served, tokens, k, offset))
            };
            let mut on_text = |piece: &str, tokens: &[Chosen]| {
                if !stream_on {
                    return true;
                }
                let lp = legacy(tokens, &mut offset);
                events.send(&chunk(
                    json!([{"index": index, "text": piece, "logprobs": lp, "finish_reason": null}]),
                ))
            };
            if stream_on && req.echo {
                let lp = req.logprobs.map(|_| json!(null));
                if !events.send(&chunk(json!([{"index": index, "text": prompt_text, "logprobs": lp, "finish_reason": null}]))) {
                    return Ok((499, json!({})));
                }
            }
            let out = generate(served, &decode_req, &mut on_text)?;
            if out.cancelled {
                return Ok((499, json!({})));
            }
            completion_tokens += out.generated();
            if stream_on {
                // The end-of-sequence token, when it ended the text, comes last.
                let stop: Vec<Chosen> = out.stop_token.iter().cloned().collect();
                let lp = legacy(&stop, &mut offset).filter(|_| !stop.is_empty());
                let last = json!([{"index": index, "text": "", "logprobs": lp, "finish_reason": finish_reason(out.finish)}]);
                if !events.send(&chunk(last)) {
                    return Ok((499, json!({})));
                }
                continue;
            }
            let logprobs = req
                .logprobs
                .map(|k| echo_logprobs(served, &out, k, &prompt_text, req.echo));
            let text = if req.echo {
                format!("{prompt_text}{}", out.text)
            } else {
                out.text
            };
            choices.push(json!({
                "index": index,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish_reason(out.finish),
            }));
        }
    }
    let usage = usage(prompt_tokens, completion_tokens);
    if stream_on {
        if include_usage {
            let mut c = chunk(json!([]));
            c["usage"] = usage;
            events.send(&c);
        }
        events.done();
        return Ok((200, json!({})));
    }
    Ok((
        200,
        json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": served.name,
            "system_fingerprint": served.system_fingerprint(),
            "choices": choices,
            "usage": usage,
        }),
    ))
}

/// The legacy format of tokens' log-probabilities (`tokens`, `token_logprobs`,
/// `top_logprobs` as {text: logprob}, `text_offset`), offsets counted from `offset`.
fn completion_logprobs(served: &Served, tokens: &[Chosen], k: usize, offset: &mut usize) -> Value {
    let mut lp = Legacy::default();
    for t in tokens {
        lp.push(served, t.id, Some(t.logprob), Some(&t.top), k, offset);
    }
    lp.into_json()
}

/// The whole answer's legacy log-probabilities: with `echo`, the prompt's tokens first
/// (the first without a log-probability, as OpenAI and vLLM give it).
fn echo_logprobs(served: &Served, out: &Decoded, k: usize, prompt_text: &str, echo: bool) -> Value {
    let mut lp = Legacy::default();
    let mut offset = if echo { 0 } else { prompt_text.chars().count() };
    for t in &out.prompt {
        let top = t.logprob.map(|_| &t.top);
        lp.push(served, t.id, t.logprob, top, k, &mut offset);
    }
    for t in out.tokens.iter().chain(&out.stop_token) {
        lp.push(served, t.id, Some(t.logprob), Some(&t.top), k, &mut offset);
    }
    lp.into_json()
}

#[derive(Default)]
struct Legacy {
    tokens: Vec<String>,
    token_logprobs: Vec<Option<f32>>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<usize>,
}

impl Legacy {
    fn push(
        &mut self,
        served: &Served,
        id: u32,
        logprob: Option<f32>,
        top: Option<&Vec<(u32, f32)>>,
        k: usize,
        offset: &mut usize,
    ) {
        let text = served.token_text(id);
        self.text_offset.push(*offset);
        // OpenAI's offsets count characters.
        *offset += text.chars().count();
        self.tokens.push(text);
        self.token_logprobs.push(logprob);
        self.top_logprobs.push(match top {
            None => Value::Null,
            Some(top) => {
                let alternatives: serde_json::Map<String, Value> = top
                    .iter()
                    .take(k)
                    .map(|&(id, lp)| (served.token_text(id), json!(lp)))
                    .collect();
                Value::Object(alternatives)
            }
        });
    }

    fn into_json(self) -> Value {
        json!({"tokens": self.tokens, "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs, "text_offset": self.text_offset})
    }
}

/// A prompt's token ids: given (each checked against the vocabulary), or encoded; a
/// prompt that leaves no room in the context is refused.
fn encode(served: &Served, prompt: &PromptInput) -> Result<Vec<u32>, Reply> {
    let max_length = served.model.config().max_position_embeddings;
    let ids = match prompt {
        PromptInput::Ids(ids) => {
            let vocab = served.model.config().vocab_size;
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(invalid(
                    "prompt",
                    &format!("token id {bad} is not below the vocabulary size {vocab}"),
                ));
            }
            ids.clone()
        }
        PromptInput::Text(text) => {
            if text.len() > served.max_prompt_bytes {
                return Err(bad_request(&format!(
                    "this model's maximum context length is {max_length} tokens; the prompt has {} bytes, \
                     more than any {max_length} tokens can hold",
                    text.len()
                )));
            }
            served
                .tokenizer
                .encode_prompt(text)
                .map_err(|e| bad_request(&e.to_string()))?
        }
    };
    if ids.len() > max_length {
        return Err(bad_request(&format!(
            "this model's maximum context length is {max_length} tokens; the prompt has {}",
            ids.len()
        )));
    }
    Ok(ids)
}

/// The tokens to generate at most: what was asked (default: the room left), capped by
/// the room left in the context; more than the whole context is an error.
fn max_new(served: &Served, prompt_tokens: usize, asked: Option<usize>) -> Result<usize, Reply> {
    let max_length = served.model.config().max_position_embeddings;
    let room = max_length.saturating_sub(prompt_tokens.max(1));
    match asked {
        // As vLLM: asking for more than fits is an error, not a silently shorter answer
        // (lm-eval's echo scoring would lose a token).
        Some(m) if m > room => Err(invalid(
            "max_tokens",
            &format!(
                "this model's maximum context length is {max_length} tokens; you requested \
                 {} ({prompt_tokens} in the prompt, {m} in the completion)",
                prompt_tokens + m
            ),
        )),
        Some(m) => Ok(m),
        None => Ok(room),
    }
}

/// Generation from the served model; a failure is a 500.
fn generate(
    served: &Served,
    req: &DecodeRequest,
    on_text: &mut dyn FnMut(&str, &[Chosen]) -> bool,
) -> Result<Decoded, Reply> {
    match &served.batcher {
        Some(batcher) => batcher.generate(req, on_text),
        None => decode(&served.model, &served.tokenizer, req, on_text),
    }
    .map_err(|e| error(500, "server_error", &e.to_string()))
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
