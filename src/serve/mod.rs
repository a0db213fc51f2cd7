//! `ckpt serve`: one checkpoint behind an OpenAI-compatible HTTP API, so it can be the
//! judge, the reference or the subject of any tool that speaks that API
//! (the endpoints are in [`api`]).
//!
//! The server is tiny_http's blocking HTTP/1.1 server on loopback by default;
//! `workers` threads take requests off its queue and run them on the shared model
//! (generation itself is multi-threaded by the tensor kernels, so one worker is
//! usually the fastest).
//!
//! ```no_run
//! # use ckpt::serve::{Served, ServeConfig, Server};
//! # fn f(served: Served) -> ckpt::Result<()> {
//! let server = Server::bind(&ServeConfig::default())?;
//! println!("listening on {}", server.url());
//! server.run(&served, 1);
//! # Ok(()) }
//! ```

pub mod api;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::judge::chat::ChatPrompt;
use crate::model::Llama;
use crate::tokenizer::TextTokenizer;
use candle_core::{DType, Device};
use std::io::Read;
use std::net::SocketAddr;

/// The checkpoint being served.
pub struct Served {
    pub model: Llama,
    pub tokenizer: TextTokenizer,
    pub chat: ChatPrompt,
    /// The model id clients name (`GET /v1/models` lists it).
    pub name: String,
}

impl Served {
    /// Loads the checkpoint, its tokenizer and its chat template.
    pub fn load(ckpt: &Checkpoint, name: &str, device: &Device, dtype: DType) -> Result<Self> {
        let cfg = ckpt.config()?;
        Ok(Self {
            tokenizer: TextTokenizer::load(&ckpt.dir, None, cfg.bos_token_id, cfg.eos_token_id)?,
            chat: ChatPrompt::for_checkpoint(&ckpt.dir)?,
            model: ckpt.load_model(device, dtype)?,
            name: name.to_string(),
        })
    }

    /// The text of one token (special tokens spelled out).
    pub fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id]).unwrap_or_default()
    }
}

/// Where to listen.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub host: String,
    /// 0: any free port.
    pub port: u16,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
        }
    }
}

/// Largest request body read (a judge prompt is a few kilobytes).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// A bound server.
pub struct Server {
    http: tiny_http::Server,
    addr: SocketAddr,
}

impl Server {
    /// Binds `host:port`.
    pub fn bind(cfg: &ServeConfig) -> Result<Self> {
        let what = format!("{}:{}", cfg.host, cfg.port);
        let http = tiny_http::Server::http(what.as_str())
            .map_err(|e| Error::Invalid(format!("cannot listen on {what}: {e}")))?;
        let addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| Error::Invalid(format!("{what} is not an IP address")))?;
        Ok(Self { http, addr })
    }

    /// The address bound (the actual port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients use: `http://HOST:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Answers requests until the process ends.
    pub fn run(&self, served: &Served, workers: usize) {
        std::thread::scope(|scope| {
            for _ in 0..workers.max(1) {
                scope.spawn(|| {
                    for request in self.http.incoming_requests() {
                        respond(served, request);
                    }
                });
            }
        });
    }
}

fn respond(served: &Served, mut request: tiny_http::Request) {
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_uppercase();
    let path = request.url().to_string();
    let mut body = Vec::new();
    let read = request.as_reader().take(MAX_BODY).read_to_end(&mut body);
    let (status, reply) = match read {
        Ok(_) => api::handle(served, &method, &path, &body),
        Err(e) => (
            400,
            serde_json::json!({"error": {"message": format!("cannot read the request: {e}"), "type": "invalid_request_error"}}),
        ),
    };
    tracing::info!(
        "{method} {path} {status} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        .expect("a valid header");
    let response = tiny_http::Response::from_string(reply.to_string())
        .with_status_code(status)
        .with_header(header);
    if let Err(e) = request.respond(response) {
        tracing::debug!("{method} {path}: the client left before the answer: {e}");
    }
}
