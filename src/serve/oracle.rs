//! `ckpt serve --oracle instructions.json`: the ground-truth judge
//! ([`crate::eval::judge::oracle`]) behind the same OpenAI schema as a served checkpoint, so
//! `ckpt eval --tasks alpaca_eval --judge-url` talks to it like to any judge:
//!
//! - `GET /v1/models`: the judge's name;
//! - `POST /v1/chat/completions`: the last user message is the judge prompt (the
//!   built-in template's); the answer is one token, the better answer's identifier,
//!   and with `logprobs: true` its log-probability and, in `top_logprobs` (up to the
//!   number asked), both identifiers' (ln p and ln(1 - p)). A prompt it cannot read, or
//!   an instruction it has no truth for, is a 400 whose message says which.
//!
//! ```no_run
//! # use ckpt::eval::judge::oracle::{Oracle, DEFAULT_K};
//! # use ckpt::serve::oracle::{start_oracle, DEFAULT_NAME};
//! # fn f(set: &[ckpt::eval::judge::instructions::Instruction]) -> ckpt::Result<()> {
//! let judge = start_oracle(Oracle::new(set, DEFAULT_K)?, DEFAULT_NAME)?;
//! println!("judge at {}", judge.url()); // pass it as --judge-url
//! judge.shutdown()?;
//! # Ok(()) }
//! ```

use super::api::{self, bad_request, check_common, error, models, next_id, ChatMessage, Reply};
use super::{Handler, Listen, RunningServer, Server};
use crate::error::Result;
use crate::eval::judge::oracle::Oracle;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The judge's model name unless another is given.
pub const DEFAULT_NAME: &str = "ground-truth-oracle";

/// The oracle as a [`Handler`].
pub(crate) struct OracleJudge {
    pub(crate) oracle: Oracle,
    /// The model id clients name (`GET /v1/models` lists it).
    pub(crate) name: String,
}

impl Handler for OracleJudge {
    fn handle(&self, method: &str, path: &str, body: &[u8], _events: &super::Events) -> Reply {
        match (method, api::route(path)) {
            ("GET", "/v1/models" | "/models") => (200, models(&self.name)),
            ("POST", "/v1/chat/completions" | "/chat/completions") => api::parse(body)
                .and_then(|r| self.chat(r))
                .unwrap_or_else(|e| e),
            ("GET", "/health" | "") => (200, json!({"status": "ok", "model": self.name})),
            (_, "/v1/models" | "/v1/chat/completions") => error(
                405,
                "invalid_request_error",
                &format!("{method} is not allowed on {path}"),
            ),
            _ => error(
                404,
                "not_found_error",
                &format!(
                    "no route {method} {path}: the ground-truth judge answers POST /v1/chat/completions"
                ),
            ),
        }
    }
}

/// The fields of a chat request the judge reads (the others, `max_tokens` and
/// `temperature` among them, change nothing: the answer is one deterministic token).
#[derive(Deserialize)]
struct JudgeRequest {
    model: Option<String>,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<usize>,
    #[serde(default)]
    stream: bool,
    n: Option<usize>,
}

impl OracleJudge {
    fn chat(&self, req: JudgeRequest) -> std::result::Result<Reply, Reply> {
        check_common(&self.name, &req.model, req.stream, req.n)?;
        api::check_roles(&req.messages)?;
        let prompt = req
            .messages
            .into_iter()
            .map(ChatMessage::into_message)
            .rfind(|m| m.role == "user")
            .ok_or_else(|| bad_request("no user message: the judge prompt is the last one"))?
            .content;
        let v = self
            .oracle
            .judge(&prompt)
            .map_err(|e| bad_request(&e.to_string()))?;
        tracing::debug!("qualities {:?}: p({}) = {}", v.quality, v.ids[0], v.p_first);
        let better = usize::from(v.p_first < 0.5);
        let entry = |i: usize| {
            let id = &v.ids[i];
            json!({"token": id, "logprob": v.logprobs[i], "bytes": id.as_bytes()})
        };
        let logprobs = req.logprobs.then(|| {
            let mut first = entry(better);
            let top: Vec<Value> = [better, 1 - better]
                .into_iter()
                .take(req.top_logprobs.unwrap_or(0))
                .map(entry)
                .collect();
            first["top_logprobs"] = top.into();
            json!({"content": [first]})
        });
        // The oracle has no tokenizer: the prompt is counted in words.
        let prompt_tokens = prompt.split_whitespace().count();
        Ok((
            200,
            json!({
                "id": next_id("chatcmpl"),
                "object": "chat.completion",
                "created": api::unix_time(),
                "model": self.name,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": v.ids[better]},
                    "logprobs": logprobs,
                    "finish_reason": "stop",
                }],
                "usage": api::usage(prompt_tokens, 1),
            }),
        ))
    }
}

/// Starts the ground-truth judge on `127.0.0.1` at a free port, answering from a
/// background thread, as model `name`; its `url()` is the `--judge-url`. Dropping the
/// returned server (or `shutdown()`) stops it.
pub fn start_oracle(oracle: Oracle, name: &str) -> Result<RunningServer> {
    let server = Server::bind(&Listen {
        host: "127.0.0.1".into(),
        port: 0,
        ..Listen::default()
    })?;
    let judge = OracleJudge {
        oracle,
        name: name.to_string(),
    };
    // Judging is a few microseconds: two workers keep a slow client from queueing others.
    server.spawn(Arc::new(judge), 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::judge::instructions::Instruction;
    use crate::eval::judge::preference::read_verdict;
    use crate::eval::judge::prompt::{JudgeTemplate, IDENTIFIERS};
    use crate::serve::Events;

    fn judge() -> OracleJudge {
        let truth = Instruction {
            instruction: "Where does Kalo live?".into(),
            output: Some("Kalo lives in Torford.".into()),
            generator: None,
            dataset: None,
        };
        OracleJudge {
            oracle: Oracle::new(&[truth], 5.0).unwrap(),
            name: "oracle".into(),
        }
    }

    fn ask(j: &OracleJudge, body: Value) -> Reply {
        j.handle(
            "POST",
            "/v1/chat/completions",
            body.to_string().as_bytes(),
            &Events::none(),
        )
    }

    #[test]
    fn the_answer_reads_back_as_the_oracles_probability() {
        let j = judge();
        let prompt = JudgeTemplate::builtin()
            .render(
                "Where does Kalo live?",
                "Kalo lives in Vo.",
                "Kalo lives in Torford.",
            )
            .unwrap();
        let expected = j.oracle.judge(&prompt).unwrap().p_first;
        let (status, reply) = ask(
            &j,
            json!({"messages": [{"role": "system", "content": "Judge."},
                                {"role": "user", "content": prompt}],
                   "max_tokens": 1, "logprobs": true, "top_logprobs": 20}),
        );
        assert_eq!(status, 200, "{reply}");
        let choice = &reply["choices"][0];
        assert_eq!(choice["message"]["content"], "B");
        let v = read_verdict(choice, IDENTIFIERS).unwrap();
        assert!((v.p_first - expected).abs() < 1e-12);
        let top = choice["logprobs"]["content"][0]["top_logprobs"]
            .as_array()
            .unwrap();
        assert_eq!(top.len(), 2);
        // Without log-probabilities the verdict is the answer; one alternative only.
        let (_, reply) = ask(
            &j,
            json!({"messages": [{"role": "user", "content": prompt}]}),
        );
        assert!(reply["choices"][0]["logprobs"].is_null());
        let (_, reply) = ask(
            &j,
            json!({"messages": [{"role": "user", "content": prompt}], "logprobs": true, "top_logprobs": 1}),
        );
        let top = &reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"];
        assert_eq!(top.as_array().unwrap().len(), 1);
        assert_eq!(top[0]["token"], "B");
    }

    #[test]
    fn requests_it_cannot_answer() {
        let j = judge();
        let (status, e) = ask(
            &j,
            json!({"messages": [{"role": "assistant", "content": "x"}]}),
        );
        assert_eq!(status, 400);
        assert!(e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no user message"));
        let (status, e) = ask(
            &j,
            json!({"model": "gpt", "messages": [{"role": "user", "content": "x"}]}),
        );
        assert_eq!(status, 404, "{e}");
        let (status, _) = j.handle("POST", "/v1/completions", b"{}", &Events::none());
        assert_eq!(status, 404);
        let (status, _) = j.handle("GET", "/v1/chat/completions", b"", &Events::none());
        assert_eq!(status, 405);
        let (status, m) = j.handle("GET", "/v1/models", b"", &Events::none());
        assert_eq!((status, &m["data"][0]["id"]), (200, &json!("oracle")));
    }
}
