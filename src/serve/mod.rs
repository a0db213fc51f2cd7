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
//! # use ckpt::serve::{Listen, Served, Server};
//! # fn f(served: Served) -> ckpt::Result<()> {
//! let server = Server::bind(&Listen::default())?;
//! println!("listening on {}", server.url());
//! server.run(std::sync::Arc::new(served), 1)?;
//! # Ok(()) }
//! ```
//!
//! `ckpt serve` is a [`ServeConfig`] given to [`run`]. [`Server::spawn`] serves from a
//! background thread instead, until the returned [`RunningServer`] is shut down or
//! dropped (the demo's in-process judge).

pub(crate) mod api;
pub(crate) mod batch;
pub mod decode;
mod job;
pub mod oracle;
pub(crate) mod sampling;

pub use job::{run, Backend, Event, ServeConfig};

use crate::chat::ChatPrompt;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::tokenizer::{EncodePolicy, TextTokenizer};
use candle_core::{DType, Device};
use http_body_util::combinators::BoxBody;
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
/// JSON body, run on a blocking thread; or, for a streamed answer, Server-Sent Events
/// sent to `events` as they are ready (the reply is then not used).
pub trait Handler: Send + Sync + 'static {
    /// The answer to one request: HTTP status and JSON body.
    fn handle(&self, method: &str, path: &str, body: &[u8], events: &Events) -> api::Reply;
}

/// Where a handler streams Server-Sent Events (`data: {json}` lines, then
/// `data: [DONE]`). Sending fails once the client has gone, so that the handler stops
/// generating for nobody.
pub struct Events {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
}

impl Events {
    /// Events that go nowhere (a handler called outside a server, in tests).
    pub fn none() -> Self {
        Self { tx: None }
    }

    fn to(tx: tokio::sync::mpsc::Sender<Bytes>) -> Self {
        Self { tx: Some(tx) }
    }

    /// Sends one event; false when nobody listens any more.
    pub(crate) fn send(&self, data: &serde_json::Value) -> bool {
        self.send_line(&data.to_string())
    }

    /// Ends the stream with `data: [DONE]`.
    pub(crate) fn done(&self) {
        self.send_line("[DONE]");
    }

    fn send_line(&self, data: &str) -> bool {
        match &self.tx {
            Some(tx) => tx
                .blocking_send(Bytes::from(format!("data: {data}\n\n")))
                .is_ok(),
            None => true,
        }
    }
}

/// The checkpoint being served.
pub struct Served {
    pub(crate) model: Arc<Model>,
    pub tokenizer: Arc<TextTokenizer>,
    pub(crate) chat: ChatPrompt,
    /// The model id clients name (`GET /v1/models` lists it).
    pub(crate) name: String,
    /// Prompt bytes beyond which no prompt fits the context, whatever it says
    /// (`max_length` tokens of the longest vocabulary entry): checked before tokenizing,
    /// so that a huge body is refused at once.
    pub(crate) max_prompt_bytes: usize,
    /// The weights' fingerprint (as the results store keys them).
    pub(crate) fingerprint: String,
    /// Decodes the requests in flight together ([`Served::batched`]); without it each
    /// request is decoded alone.
    pub(crate) batcher: Option<batch::Batcher>,
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
            tokenizer: Arc::new(tokenizer),
            model: Arc::new(ckpt.load_for_inference(device, dtype)?),
            name: name.to_string(),
            max_prompt_bytes,
            fingerprint: ckpt.fingerprint()?,
            batcher: None,
        })
    }

    /// Decodes up to `max_batch` requests together (continuous batching); 1: each
    /// alone, in its handler's thread.
    pub(crate) fn batched(mut self, max_batch: usize) -> Result<Self> {
        self.batcher = match max_batch {
            0 | 1 => None,
            n => Some(batch::Batcher::start(
                self.model.clone(),
                self.tokenizer.clone(),
                n,
            )?),
        };
        Ok(self)
    }

    /// Requests that may be decoded at once: the handlers the server should run.
    pub(crate) fn concurrency(&self) -> usize {
        self.batcher.as_ref().map_or(1, |b| b.max_batch())
    }

    /// OpenAI's `system_fingerprint`: which weights answered.
    pub(crate) fn system_fingerprint(&self) -> String {
        format!("fp_{}", &self.fingerprint[..self.fingerprint.len().min(12)])
    }

    /// The `GET /v1/models` list: the one model, its context length and fingerprint.
    pub(crate) fn models(&self) -> serde_json::Value {
        serde_json::json!({"object": "list", "data": [{
            "id": self.name, "object": "model", "created": 0, "owned_by": "ckpt",
            "max_model_len": self.model.config().max_position_embeddings,
            "fingerprint": self.fingerprint,
        }]})
    }

    /// `GET /health`.
    pub(crate) fn health(&self) -> serde_json::Value {
        let mut health = serde_json::json!({"status": "ok", "model": self.name, "fingerprint": self.fingerprint});
        if let Some(batcher) = &self.batcher {
            health["batching"] = batcher.stats();
        }
        health
    }

    /// The text of one token (special tokens spelled out).
    pub(crate) fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id]).unwrap_or_default()
    }
}

impl Handler for Served {
    fn handle(&self, method: &str, path: &str, body: &[u8], events: &Events) -> api::Reply {
        api::handle(self, method, path, body, events)
    }
}

/// Where to listen, and who may ask.
#[derive(Debug, Clone)]
pub struct Listen {
    pub(crate) host: String,
    /// 0: any free port.
    pub(crate) port: u16,
    /// When set, every request must carry `Authorization: Bearer KEY`.
    pub(crate) api_key: Option<String>,
    /// Requests waiting for a worker at most; more are answered 503 with Retry-After.
    pub(crate) max_queue: usize,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            api_key: None,
            max_queue: 256,
        }
    }
}

/// Largest request body read (a judge prompt is a few kilobytes).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A bound server.
pub struct Server {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    gate: Arc<Gate>,
}

/// What every request passes before a worker: the API key, and room in the queue.
struct Gate {
    api_key: Option<String>,
    max_queue: usize,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Server {
    /// Binds `host:port`.
    pub fn bind(cfg: &Listen) -> Result<Self> {
        let what = format!("{}:{}", cfg.host, cfg.port);
        let listener = std::net::TcpListener::bind(what.as_str())
            .map_err(|e| Error::network(format!("cannot listen on {what}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::network(format!("{what}: {e}")))?;
        let gate = Arc::new(Gate {
            api_key: cfg.api_key.clone(),
            max_queue: cfg.max_queue,
            waiting: 0.into(),
        });
        Ok(Self {
            listener,
            addr,
            gate,
        })
    }

    /// The address bound (the actual port when 0 was asked for).
    pub(crate) fn addr(&self) -> SocketAddr {
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
        let (addr, listener, gate) = (self.addr, self.listener, self.gate);
        let served = runtime.block_on(async move {
            let listener = listener
                .set_nonblocking(true)
                .and_then(|_| tokio::net::TcpListener::from_std(listener))
                .map_err(|e| Error::network(format!("{addr}: {e}")))?;
            let accepting = tokio::spawn(accept_forever(listener, handler, permits, gate));
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
    gate: Arc<Gate>,
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
        let (handler, permits, gate) = (handler.clone(), permits.clone(), gate.clone());
        tokio::spawn(async move {
            let service =
                service_fn(move |req| respond(req, handler.clone(), permits.clone(), gate.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(status: u16, reply: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply.to_string())).boxed())
        .expect("a valid response")
}

/// Compares a presented key with the expected one in time independent of where they
/// differ (only the length may show).
fn same_key(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

impl Gate {
    /// An error reply when the request may not go on.
    fn check(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        if let Some(key) = &self.api_key {
            let given = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !same_key(given.trim().as_bytes(), key.as_bytes()) {
                let body = serde_json::json!({"error": {"message": "Incorrect API key provided (Authorization: Bearer KEY)",
                    "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
                return Some(json_response(401, &body));
            }
        }
        None
    }
}

/// Holds a place in the queue until dropped.
struct Queued<'a>(&'a Gate);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn respond<H: Handler>(
    req: Request<Incoming>,
    handler: Arc<H>,
    permits: Arc<Semaphore>,
    gate: Arc<Gate>,
) -> std::result::Result<Response<Body>, Infallible> {
    let started = std::time::Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    if let Some(refused) = gate.check(&req) {
        tracing::info!("{method} {path} 401");
        return Ok(refused);
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            let reply = serde_json::json!({"error": {"message": format!("cannot read the request: {e}"), "type": "invalid_request_error"}});
            return Ok(json_response(400, &reply));
        }
    };
    let waiting = gate
        .waiting
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let queued = Queued(&gate);
    if waiting >= gate.max_queue {
        drop(queued);
        let reply = serde_json::json!({"error": {"message": format!("the server is busy ({waiting} requests waiting); retry shortly"),
            "type": "server_error", "param": null, "code": "overloaded"}});
        let mut response = json_response(503, &reply);
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
        return Ok(response);
    }
    let permit = permits
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    drop(queued);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let (m, p) = (method.clone(), path.clone());
    let work = tokio::task::spawn_blocking(move || {
        let events = Events::to(tx);
        handler.handle(&m, &p, &body, &events)
    });
    // The first event; none when the handler ended without any (its sender is gone).
    let Some(first) = rx.recv().await else {
        let (status, reply) = match work.await {
            Ok(reply) => reply,
            Err(e) => (
                500,
                serde_json::json!({"error": {"message": format!("internal error: {e}"), "type": "server_error"}}),
            ),
        };
        drop(permit);
        tracing::info!(
            "{method} {path} {status} in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(json_response(status, &reply));
    };
    // Streaming: the worker keeps its permit until the handler returns (the client
    // gone makes its next send fail, so it stops early).
    tokio::spawn(async move {
        let _ = work.await;
        drop(permit);
        tracing::info!(
            "{method} {path} 200 (stream) in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    });
    let stream = EventStream {
        first: Some(first),
        rest: rx,
    };
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(stream.boxed())
        .expect("a valid response"))
}

/// A response body that is the events a handler sends, as they come.
struct EventStream {
    first: Option<Bytes>,
    rest: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(first))));
        }
        self.rest
            .poll_recv(cx)
            .map(|next| next.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}
