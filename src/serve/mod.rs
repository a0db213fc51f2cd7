//! `ckpt serve`: one checkpoint behind an OpenAI-compatible HTTP API, so it can be the
//! judge, the reference or the subject of any tool that speaks that API
//! (the endpoints are in [`api`]).
//!
//! The server is hyper's HTTP/1.1 server (keep-alive, `Expect: 100-continue`,
//! chunked bodies) on loopback by default; each connection has its own task, and
//! requests take one of `workers` permits to run on the shared model in a blocking
//! thread (generation is multi-threaded by the tensor kernels already, so one worker
//! is usually the fastest; the others wait their turn, never their connection).
//!
//! ```no_run
//! # use ckpt::serve::{Served, ServeConfig, Server};
//! # fn f(served: Served) -> ckpt::Result<()> {
//! let server = Server::bind(&ServeConfig::default())?;
//! println!("listening on {}", server.url());
//! server.run(std::sync::Arc::new(served), 1)?;
//! # Ok(()) }
//! ```

pub mod api;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::judge::chat::ChatPrompt;
use crate::model::Llama;
use crate::tokenizer::TextTokenizer;
use candle_core::{DType, Device};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

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
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A bound server.
pub struct Server {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

impl Server {
    /// Binds `host:port`.
    pub fn bind(cfg: &ServeConfig) -> Result<Self> {
        let what = format!("{}:{}", cfg.host, cfg.port);
        let listener = std::net::TcpListener::bind(what.as_str())
            .map_err(|e| Error::Invalid(format!("cannot listen on {what}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
        Ok(Self { listener, addr })
    }

    /// The address bound (the actual port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients use: `http://HOST:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Answers requests until the process ends: every connection is served by its own
    /// task, and at most `workers` requests run on the model at once.
    pub fn run(self, served: Arc<Served>, workers: usize) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start the server: {e}")))?;
        let permits = Arc::new(Semaphore::new(workers.max(1)));
        let addr = self.addr;
        runtime.block_on(async move {
            self.listener
                .set_nonblocking(true)
                .and_then(|_| tokio::net::TcpListener::from_std(self.listener))
                .map_err(|e| Error::Invalid(format!("{addr}: {e}")))
                .map(|listener| accept_forever(listener, served, permits))?
                .await;
            Ok(())
        })
    }
}

async fn accept_forever(
    listener: tokio::net::TcpListener,
    served: Arc<Served>,
    permits: Arc<Semaphore>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, keep serving.
                tracing::warn!("accepting a connection: {e}");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let (served, permits) = (served.clone(), permits.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, served.clone(), permits.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    served: Arc<Served>,
    permits: Arc<Semaphore>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let started = std::time::Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let (status, reply) = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Err(e) => (
            400,
            serde_json::json!({"error": {"message": format!("cannot read the request: {e}"), "type": "invalid_request_error"}}),
        ),
        Ok(body) => {
            let body = body.to_bytes();
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let (m, p) = (method.clone(), path.clone());
            tokio::task::spawn_blocking(move || api::handle(&served, &m, &p, &body))
                .await
                .unwrap_or_else(|e| {
                    (500, serde_json::json!({"error": {"message": format!("internal error: {e}"), "type": "server_error"}}))
                })
        }
    };
    tracing::info!(
        "{method} {path} {status} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply.to_string())))
        .expect("a valid response");
    Ok(response)
}
