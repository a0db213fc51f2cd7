//! `ckpt serve`: one checkpoint behind an OpenAI-compatible HTTP API, so it can be the
//! judge, the reference or the subject of any tool that speaks that API
//! (the endpoints are in [`api`]); or the ground-truth judge ([`oracle`]). What answers
//! is a [`Handler`]; the server is the same.
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
//!
//! [`Server::spawn`] serves from a background thread instead, until the returned
//! [`RunningServer`] is shut down or dropped (the demo's in-process judge).

pub mod api;
pub mod oracle;

use crate::chat::ChatPrompt;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::tokenizer::{EncodePolicy, TextTokenizer};
use candle_core::{DType, Device};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

/// What answers the requests: a function from (method, path, body) to a status and a
/// JSON body, run on a blocking thread.
pub trait Handler: Send + Sync + 'static {
    /// The answer to one request: HTTP status and JSON body.
    fn handle(&self, method: &str, path: &str, body: &[u8]) -> api::Reply;
}

/// The checkpoint being served.
pub struct Served {
    pub model: Model,
    pub tokenizer: TextTokenizer,
    pub chat: ChatPrompt,
    /// The model id clients name (`GET /v1/models` lists it).
    pub name: String,
    /// Prompt bytes beyond which no prompt fits the context, whatever it says
    /// (`max_length` tokens of the longest vocabulary entry): checked before tokenizing,
    /// so that a huge body is refused at once.
    pub max_prompt_bytes: usize,
}

impl Served {
    /// Loads the checkpoint, its tokenizer (under `policy`) and its chat template.
    pub fn load(
        ckpt: &Checkpoint,
        name: &str,
        device: &Device,
        dtype: DType,
        policy: EncodePolicy,
    ) -> Result<Self> {
        let cfg = ckpt.config()?;
        let tokenizer =
            TextTokenizer::load_with(&ckpt.dir, None, cfg.bos_token_id, cfg.eos_token_id, policy)?;
        let max_prompt_bytes = cfg.max_position_embeddings * tokenizer.max_token_bytes();
        Ok(Self {
            chat: ChatPrompt::from_files(&tokenizer.files)?,
            tokenizer,
            model: ckpt.load_model(device, dtype)?,
            name: name.to_string(),
            max_prompt_bytes,
        })
    }

    /// The text of one token (special tokens spelled out).
    pub fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id]).unwrap_or_default()
    }
}

impl Handler for Served {
    fn handle(&self, method: &str, path: &str, body: &[u8]) -> api::Reply {
        api::handle(self, method, path, body)
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
    /// task, and at most `workers` requests run on the handler at once.
    pub fn run<H: Handler>(self, handler: Arc<H>, workers: usize) -> Result<()> {
        self.serve(handler, workers, std::future::pending())
    }

    /// Answers requests from a background thread until the returned server is shut
    /// down or dropped.
    pub fn spawn<H: Handler>(self, handler: Arc<H>, workers: usize) -> Result<RunningServer> {
        let (addr, url) = (self.addr, self.url());
        let (stop, stopped) = oneshot::channel::<()>();
        let until = async move {
            // A dropped sender stops the server too.
            let _ = stopped.await;
        };
        let thread = std::thread::Builder::new()
            .name(format!("ckpt-serve-{}", addr.port()))
            .spawn(move || self.serve(handler, workers, until))
            .map_err(|e| Error::Invalid(format!("cannot start the server thread: {e}")))?;
        Ok(RunningServer {
            addr,
            url,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Serves until `until` completes, then closes the listener and every connection.
    fn serve<H: Handler>(
        self,
        handler: Arc<H>,
        workers: usize,
        until: impl Future<Output = ()>,
    ) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start the server: {e}")))?;
        let permits = Arc::new(Semaphore::new(workers.max(1)));
        let (addr, listener) = (self.addr, self.listener);
        let served = runtime.block_on(async move {
            let listener = listener
                .set_nonblocking(true)
                .and_then(|_| tokio::net::TcpListener::from_std(listener))
                .map_err(|e| Error::Invalid(format!("{addr}: {e}")))?;
            let accepting = tokio::spawn(accept_forever(listener, handler, permits));
            until.await;
            accepting.abort();
            Ok(())
        });
        // Connections still open end with the runtime; a request being answered gets
        // a moment to finish.
        runtime.shutdown_timeout(Duration::from_secs(5));
        served
    }
}

/// A server answering from a background thread ([`Server::spawn`]); dropping it
/// shuts it down.
pub struct RunningServer {
    addr: SocketAddr,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl RunningServer {
    /// The base URL clients use: `http://HOST:PORT/v1`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes the connections and waits for the thread.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| Error::Invalid(format!("the server at {} panicked", self.url)))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

async fn accept_forever<H: Handler>(
    listener: tokio::net::TcpListener,
    handler: Arc<H>,
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
        let (handler, permits) = (handler.clone(), permits.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, handler.clone(), permits.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

async fn respond<H: Handler>(
    req: Request<Incoming>,
    handler: Arc<H>,
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
            tokio::task::spawn_blocking(move || handler.handle(&m, &p, &body))
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
