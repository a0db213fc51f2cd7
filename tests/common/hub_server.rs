//! A Hugging Face Hub stand-in for tests and benchmarks: a small HTTP/1.1 server on
//! loopback implementing the parts of the Hub API that uploads and downloads use, as
//! huggingface_hub and the hf-hub crate expect them:
//!
//! - `GET /api/whoami-v2`, `POST /api/repos/create` (409 when the repo exists, 403
//!   outside the token's namespaces), `POST /api/models/{repo}/branch/{b}`,
//!   `GET /api/models/{repo}[/revision/{rev}]` (siblings with blob ids and LFS pointers);
//! - `POST /api/models/{repo}/preupload/{rev}` (LFS for large, binary or weight files;
//!   the `oid` of files already at the revision);
//! - `POST /{repo}.git/info/lfs/objects/batch`: basic uploads, and multipart ones (a
//!   `chunk_size` and one URL per part) above a size threshold; objects it already has
//!   get no actions; part `PUT`s answer an `ETag`; completion checks every part's ETag
//!   and the sha256 of the whole; `verify` checks the object exists with its size;
//! - `POST /api/models/{repo}/commit/{rev}` (NDJSON; `parentCommit` must be the head,
//!   else 412; LFS files must reference stored objects; `create_pr=1` opens a PR ref);
//! - `GET /{repo}/resolve/{rev}/{path}`: regular files with `ETag` and `X-Repo-Commit`,
//!   LFS files by a 302 to a "CDN" URL with `X-Linked-Etag` / `X-Linked-Size`, byte
//!   ranges (`206` + `Content-Range`), as the hf-hub crate reads them.
//!
//! Faults can be injected per route (an error status, `Retry-After`, a connection
//! dropped before or after handling), and every request is logged for assertions.
//! LFS objects are stored on disk and streamed in both directions, so a benchmark can
//! push gigabytes through it. Every response closes its connection.

#![allow(dead_code)] // the tests and the benchmark each use a subset

use base64::Engine;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Files at least this large go to LFS (the Hub's 10 MiB rule).
const LFS_SIZE: u64 = 10 * 1024 * 1024;

/// Server settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The one valid token.
    pub token: String,
    /// Its user.
    pub user: String,
    /// Organisations the user may create repositories in.
    pub orgs: Vec<String>,
    /// LFS objects of at least this many bytes are uploaded in parts.
    pub multipart_threshold: u64,
    /// Part size of multipart uploads.
    pub chunk_size: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: "hf_TestTokenForTheLoopbackHub".into(),
            user: "tester".into(),
            orgs: vec!["ckpt-org".into()],
            multipart_threshold: 64 * 1024,
            chunk_size: 32 * 1024,
        }
    }
}

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Answer this status (after reading the request).
    Status(u16),
    /// Answer 429 with `Retry-After: secs`.
    RetryAfter(u64),
    /// Close the connection halfway through reading the request body.
    Drop,
    /// Handle the request, then close the connection without answering.
    DropAfterHandling,
    /// Answer this status with the request's `Authorization` header in the body (a
    /// careless proxy: the client must not show it).
    EchoAuthorization(u16),
    /// Commit something else to the branch first (a concurrent writer).
    ConcurrentCommit,
}

/// A fault for `times` requests of `route` (and part number `part`, when given).
#[derive(Debug, Clone)]
pub struct Fault {
    pub route: &'static str,
    pub part: Option<u32>,
    pub times: u32,
    pub action: FaultAction,
}

impl Fault {
    pub fn new(route: &'static str, action: FaultAction) -> Self {
        Self {
            route,
            part: None,
            times: 1,
            action,
        }
    }

    pub fn part(mut self, n: u32) -> Self {
        self.part = Some(n);
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub route: &'static str,
    pub method: String,
    pub target: String,
    /// 0 when the connection was dropped without an answer.
    pub status: u16,
    pub at: Instant,
    pub authorized: bool,
    pub part: Option<u32>,
    pub oid: Option<String>,
}

#[derive(Debug, Clone)]
enum Blob {
    Regular(Vec<u8>),
    Lfs { oid: String, size: u64 },
}

#[derive(Debug, Clone)]
struct Commit {
    parent: Option<String>,
    message: String,
    files: BTreeMap<String, Blob>,
}

#[derive(Debug, Default)]
struct Repo {
    private: bool,
    /// Branches and PR refs (`refs/pr/N`) to commit ids.
    refs: BTreeMap<String, String>,
    commits: HashMap<String, Commit>,
    prs: u32,
}

#[derive(Debug)]
struct Object {
    size: u64,
    segments: Vec<PathBuf>,
}

#[derive(Debug, Default)]
struct Pending {
    parts: BTreeMap<u32, (PathBuf, String)>,
}

struct State {
    opts: Options,
    repos: HashMap<String, Repo>,
    objects: HashMap<String, Object>,
    announced: HashMap<String, u64>,
    pending: HashMap<String, Pending>,
    faults: Vec<Fault>,
    log: Vec<LogEntry>,
}

/// The running server; stops when dropped.
pub struct HubServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _storage: tempfile::TempDir,
}

struct Shared {
    url: String,
    state: Arc<Mutex<State>>,
    storage: PathBuf,
    counter: AtomicU64,
}

impl HubServer {
    /// Starts a server on `127.0.0.1:0`, storing LFS objects under a temporary
    /// directory in `storage_parent` (the system's when `None`).
    pub fn start(opts: Options, storage_parent: Option<&std::path::Path>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let storage = match storage_parent {
            Some(p) => tempfile::tempdir_in(p).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let state = Arc::new(Mutex::new(State {
            opts,
            repos: HashMap::new(),
            objects: HashMap::new(),
            announced: HashMap::new(),
            pending: HashMap::new(),
            faults: Vec::new(),
            log: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            url: url.clone(),
            state: Arc::clone(&state),
            storage: storage.path().to_path_buf(),
            counter: AtomicU64::new(0),
        });
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || serve(stream, &shared));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            url,
            state,
            stop,
            thread: Some(thread),
            _storage: storage,
        }
    }

    /// The valid token.
    pub fn token(&self) -> String {
        self.state.lock().unwrap().opts.token.clone()
    }

    /// Adds a fault.
    pub fn fault(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<LogEntry> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests of `route` answered with a success status.
    pub fn ok_count(&self, route: &str) -> usize {
        self.log()
            .iter()
            .filter(|e| e.route == route && (200..300).contains(&e.status))
            .count()
    }

    /// Requests of `route`, whatever their outcome.
    pub fn count(&self, route: &str) -> usize {
        self.log().iter().filter(|e| e.route == route).count()
    }

    /// Forgets the log.
    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// The commit `reference` of `repo` points at.
    pub fn head(&self, repo: &str, reference: &str) -> Option<String> {
        let st = self.state.lock().unwrap();
        st.repos.get(repo)?.refs.get(reference).cloned()
    }

    /// The number of commits in the history of `reference`.
    pub fn history_len(&self, repo: &str, reference: &str) -> usize {
        let st = self.state.lock().unwrap();
        let Some(r) = st.repos.get(repo) else {
            return 0;
        };
        let mut n = 0;
        let mut at = r.refs.get(reference).cloned();
        while let Some(sha) = at {
            n += 1;
            at = r.commits[&sha].parent.clone();
        }
        n
    }

    /// The message of the head commit of `reference`.
    pub fn head_message(&self, repo: &str, reference: &str) -> Option<String> {
        let st = self.state.lock().unwrap();
        let r = st.repos.get(repo)?;
        Some(r.commits[r.refs.get(reference)?].message.clone())
    }

    /// The paths at `reference`.
    pub fn files(&self, repo: &str, reference: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        let Some(r) = st.repos.get(repo) else {
            return vec![];
        };
        let Some(sha) = r.refs.get(reference) else {
            return vec![];
        };
        r.commits[sha].files.keys().cloned().collect()
    }

    /// Whether `path` at `reference` is stored in LFS.
    pub fn is_lfs(&self, repo: &str, reference: &str, path: &str) -> Option<bool> {
        let st = self.state.lock().unwrap();
        let r = st.repos.get(repo)?;
        let blob = r.commits[r.refs.get(reference)?].files.get(path)?;
        Some(matches!(blob, Blob::Lfs { .. }))
    }

    /// Whether the server holds a complete LFS object `oid`.
    pub fn has_object(&self, oid: &str) -> bool {
        self.state.lock().unwrap().objects.contains_key(oid)
    }

    /// Creates a repository directly (as if made elsewhere).
    pub fn create_repo(&self, repo: &str, private: bool) {
        let mut st = self.state.lock().unwrap();
        let counter = st.repos.len() as u64 + 1_000_000;
        st.repos.insert(repo.into(), new_repo(private, counter));
    }

    /// Commits `files` (path, bytes) to `main` of `repo` directly (no upload protocol),
    /// creating the repo if needed: fixtures for download tests.
    pub fn put_files(&self, repo: &str, files: &[(&str, Vec<u8>)]) {
        let mut st = self.state.lock().unwrap();
        let counter = st.repos.len() as u64 + 2_000_000;
        let r = st
            .repos
            .entry(repo.into())
            .or_insert_with(|| new_repo(false, counter));
        let parent = r.refs["main"].clone();
        let mut commit = r.commits[&parent].clone();
        commit.parent = Some(parent);
        commit.message = "fixture".into();
        for (path, bytes) in files {
            commit
                .files
                .insert(path.to_string(), Blob::Regular(bytes.clone()));
        }
        let sha = commit_id(&commit, counter);
        r.commits.insert(sha.clone(), commit);
        r.refs.insert("main".into(), sha);
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn new_repo(private: bool, counter: u64) -> Repo {
    let mut files = BTreeMap::new();
    files.insert(
        ".gitattributes".to_string(),
        Blob::Regular(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n".to_vec()),
    );
    let commit = Commit {
        parent: None,
        message: "initial commit".into(),
        files,
    };
    let sha = commit_id(&commit, counter);
    let mut repo = Repo {
        private,
        ..Default::default()
    };
    repo.commits.insert(sha.clone(), commit);
    repo.refs.insert("main".into(), sha);
    repo
}

fn hex<D: Digest>(d: D) -> String {
    d.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn git_blob_id(content: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex(h)
}

fn commit_id(c: &Commit, counter: u64) -> String {
    let mut h = Sha1::new();
    h.update(c.parent.as_deref().unwrap_or("").as_bytes());
    h.update(c.message.as_bytes());
    h.update(counter.to_le_bytes());
    for (path, blob) in &c.files {
        h.update(path.as_bytes());
        match blob {
            Blob::Regular(b) => h.update(git_blob_id(b).as_bytes()),
            Blob::Lfs { oid, .. } => h.update(oid.as_bytes()),
        }
    }
    hex(h)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ----- HTTP plumbing -----

struct Request {
    method: String,
    target: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    content_length: u64,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    /// Stream `len` bytes starting at `offset` of the concatenated segments.
    Segments {
        segments: Vec<PathBuf>,
        offset: u64,
        len: u64,
    },
}

impl Response {
    fn json(status: u16, value: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Body::Bytes(serde_json::to_vec(&value).unwrap()),
        }
    }

    fn error(status: u16, message: &str) -> Self {
        let mut r = Self::json(status, serde_json::json!({ "error": message }));
        r.headers.push(("X-Error-Message".into(), message.into()));
        r
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        406 => "Not Acceptable",
        409 => "Conflict",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn read_head(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let content_length = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(Request {
        method,
        target,
        path,
        query,
        headers,
        content_length,
    })
}

fn write_response(stream: &mut TcpStream, resp: Response, head_only: bool) -> std::io::Result<()> {
    let len = match &resp.body {
        Body::Bytes(b) => b.len() as u64,
        Body::Segments { len, .. } => *len,
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {len}\r\nConnection: close\r\n\r\n"
    ));
    stream.write_all(head.as_bytes())?;
    if head_only {
        return stream.flush();
    }
    match resp.body {
        Body::Bytes(b) => stream.write_all(&b)?,
        Body::Segments {
            segments,
            mut offset,
            mut len,
        } => {
            for seg in segments {
                let seg_len = std::fs::metadata(&seg)?.len();
                if offset >= seg_len {
                    offset -= seg_len;
                    continue;
                }
                let mut f = std::fs::File::open(&seg)?;
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
                let take = (seg_len - offset).min(len);
                std::io::copy(&mut f.take(take), stream)?;
                len -= take;
                offset = 0;
                if len == 0 {
                    break;
                }
            }
        }
    }
    stream.flush()
}

/// Dataset repos share the model namespace in this stand-in: `/api/datasets/...` is
/// served as `/api/models/...`, and `/datasets/{repo}/resolve/...` as
/// `/{repo}/resolve/...` (what `ckpt eval --hub` downloads task data through).
fn unalias_dataset(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/api/datasets/") {
        return format!("/api/models/{rest}");
    }
    match path.strip_prefix("/datasets/") {
        Some(rest) => format!("/{rest}"),
        None => path.to_string(),
    }
}

/// Which route a request is for, with the part number and oid when it has them.
fn route_of(method: &str, path: &str) -> (&'static str, Option<u32>, Option<String>) {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["api", "whoami-v2"]) => ("whoami", None, None),
        ("POST", ["api", "repos", "create"]) => ("create", None, None),
        ("POST", ["api", "models", _, _, "branch", _]) => ("branch", None, None),
        ("GET", ["api", "models", _, _]) | ("GET", ["api", "models", _, _, "revision", _]) => {
            ("revision", None, None)
        }
        ("POST", ["api", "models", _, _, "preupload", _]) => ("preupload", None, None),
        ("POST", ["api", "models", _, _, "commit", _]) => ("commit", None, None),
        ("POST", [_, repo, "info", "lfs", "objects", "batch"]) if repo.ends_with(".git") => {
            ("batch", None, None)
        }
        ("POST", [_, repo, "info", "lfs", "objects", "verify"]) if repo.ends_with(".git") => {
            ("verify", None, None)
        }
        ("PUT", ["lfs", oid]) => ("upload", None, Some(oid.to_string())),
        ("PUT", ["lfs", oid, "part", n]) => ("part", n.parse().ok(), Some(oid.to_string())),
        ("POST", ["lfs", oid, "complete"]) => ("complete", None, Some(oid.to_string())),
        ("GET" | "HEAD", ["lfs-cdn", oid]) => ("cdn", None, Some(oid.to_string())),
        ("GET" | "HEAD", [_, _, "resolve", ..]) => ("resolve", None, None),
        _ => ("unknown", None, None),
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::with_capacity(1 << 16, stream.try_clone().unwrap());
    let mut stream = stream;
    let Some(mut req) = read_head(&mut reader) else {
        return;
    };
    req.path = unalias_dataset(&req.path);
    let (route, part, oid) = route_of(&req.method, &req.path);
    let token = shared.state.lock().unwrap().opts.token.clone();
    let authorized = req.header("authorization") == Some(&format!("Bearer {token}"));
    let fault = take_fault(shared, route, part);
    let log = |status: u16| {
        shared.state.lock().unwrap().log.push(LogEntry {
            route,
            method: req.method.clone(),
            target: req.target.clone(),
            status,
            at: Instant::now(),
            authorized,
            part,
            oid: oid.clone(),
        });
    };
    match &fault {
        Some(FaultAction::Drop) => {
            let mut half = vec![0u8; (req.content_length / 2).min(1 << 20) as usize];
            let _ = reader.read_exact(&mut half);
            log(0);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        Some(FaultAction::Status(s)) => {
            drain(&mut reader, req.content_length);
            log(*s);
            let _ = write_response(&mut stream, Response::error(*s, "injected fault"), false);
            return;
        }
        Some(FaultAction::RetryAfter(secs)) => {
            drain(&mut reader, req.content_length);
            log(429);
            let resp = Response::error(429, "slow down").header("Retry-After", secs.to_string());
            let _ = write_response(&mut stream, resp, false);
            return;
        }
        Some(FaultAction::EchoAuthorization(s)) => {
            drain(&mut reader, req.content_length);
            log(*s);
            let echoed = req.header("authorization").unwrap_or("").to_string();
            let msg = format!("rejected request with header Authorization: {echoed}");
            let _ = write_response(&mut stream, Response::error(*s, &msg), false);
            return;
        }
        _ => {}
    }
    let resp = handle(shared, &req, route, &mut reader, authorized, &fault);
    if fault == Some(FaultAction::DropAfterHandling) {
        log(0);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    log(resp.status);
    let _ = write_response(&mut stream, resp, req.method == "HEAD");
}

fn take_fault(shared: &Shared, route: &str, part: Option<u32>) -> Option<FaultAction> {
    let mut st = shared.state.lock().unwrap();
    let i = st
        .faults
        .iter()
        .position(|f| f.route == route && f.times > 0 && (f.part.is_none() || f.part == part))?;
    st.faults[i].times -= 1;
    let action = st.faults[i].action.clone();
    if st.faults[i].times == 0 {
        st.faults.remove(i);
    }
    Some(action)
}

fn drain(reader: &mut BufReader<TcpStream>, len: u64) {
    let _ = std::io::copy(&mut reader.take(len), &mut std::io::sink());
}

fn read_body(reader: &mut BufReader<TcpStream>, len: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(len.min(1 << 26) as usize);
    let _ = reader.take(len).read_to_end(&mut body);
    body
}

/// Streams the body to `path`, returning (sha256, bytes).
fn body_to_file(
    reader: &mut BufReader<TcpStream>,
    len: u64,
    path: &PathBuf,
) -> std::io::Result<(String, u64)> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = reader.read(&mut buf[..(left.min(1 << 20) as usize)])?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok((hex(hasher), len - left))
}

// ----- the API -----

fn repo_of(req: &Request) -> Option<String> {
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", "models", ns, name, ..] => Some(format!("{ns}/{name}")),
        [ns, name, ..] => Some(format!("{ns}/{}", name.trim_end_matches(".git"))),
        _ => None,
    }
}

fn may_write(st: &State, repo: &str) -> bool {
    let ns = repo.split('/').next().unwrap_or("");
    ns == st.opts.user || st.opts.orgs.iter().any(|o| o == ns)
}

fn handle(
    shared: &Shared,
    req: &Request,
    route: &str,
    reader: &mut BufReader<TcpStream>,
    authorized: bool,
    fault: &Option<FaultAction>,
) -> Response {
    let needs_auth = matches!(
        route,
        "whoami" | "create" | "branch" | "preupload" | "commit" | "batch" | "verify"
    );
    if needs_auth && !authorized {
        drain(reader, req.content_length);
        return Response::error(401, "Invalid credentials in Authorization header");
    }
    match route {
        "whoami" => {
            let st = shared.state.lock().unwrap();
            let orgs: Vec<_> = st
                .opts
                .orgs
                .iter()
                .map(|o| serde_json::json!({"name": o, "type": "org"}))
                .collect();
            Response::json(
                200,
                serde_json::json!({"type": "user", "name": st.opts.user, "orgs": orgs}),
            )
        }
        "create" => create(shared, &read_body(reader, req.content_length)),
        "branch" => branch(shared, req),
        "revision" => revision(shared, req, authorized),
        "preupload" => preupload(shared, req, &read_body(reader, req.content_length)),
        "batch" => batch(shared, req, &read_body(reader, req.content_length)),
        "upload" => upload_basic(shared, req, reader),
        "part" => upload_part(shared, req, reader),
        "complete" => complete(shared, req, &read_body(reader, req.content_length)),
        "verify" => verify(shared, &read_body(reader, req.content_length)),
        "commit" => {
            if *fault == Some(FaultAction::ConcurrentCommit) {
                concurrent_commit(shared, req);
            }
            commit(shared, req, &read_body(reader, req.content_length))
        }
        "resolve" => resolve(shared, req, authorized),
        "cdn" => cdn(shared, req),
        _ => Response::error(404, "no such route"),
    }
}

fn create(shared: &Shared, body: &[u8]) -> Response {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Response::error(400, &format!("bad JSON: {e}")),
    };
    let name = v["name"].as_str().unwrap_or("");
    let mut st = shared.state.lock().unwrap();
    let ns = v["organization"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or(&st.opts.user)
        .to_string();
    let repo = format!("{ns}/{name}");
    if !may_write(&st, &repo) {
        return Response::error(
            403,
            &format!("You don't have the rights to create a model under the namespace \"{ns}\""),
        );
    }
    let url = format!("{}/{repo}", shared.url);
    if st.repos.contains_key(&repo) {
        return Response::json(
            409,
            serde_json::json!({"error": "You already created this model repo", "url": url}),
        );
    }
    let private = v["private"].as_bool().unwrap_or(false) || v["visibility"] == "private";
    let counter = shared.counter.fetch_add(1, Ordering::SeqCst);
    st.repos.insert(repo.clone(), new_repo(private, counter));
    Response::json(200, serde_json::json!({"url": url, "name": repo}))
}

fn last_seg(req: &Request) -> String {
    percent_decode(req.path.rsplit('/').next().unwrap_or(""))
}

fn branch(shared: &Shared, req: &Request) -> Response {
    let repo = repo_of(req).unwrap();
    let name = last_seg(req);
    let mut st = shared.state.lock().unwrap();
    if !may_write(&st, &repo) {
        return Response::error(403, "no write access");
    }
    let Some(r) = st.repos.get_mut(&repo) else {
        return Response::error(404, "Repository not found");
    };
    if r.refs.contains_key(&name) {
        return Response::error(409, "Reference already exists");
    }
    let main = r.refs["main"].clone();
    r.refs.insert(name, main);
    Response::json(200, serde_json::json!({}))
}

/// The commit `rev` names: a ref, or a commit id.
fn resolve_rev(r: &Repo, rev: &str) -> Option<String> {
    r.refs
        .get(rev)
        .cloned()
        .or_else(|| r.commits.contains_key(rev).then(|| rev.to_string()))
}

fn revision(shared: &Shared, req: &Request, authorized: bool) -> Response {
    let repo = repo_of(req).unwrap();
    let rev = if req.path.contains("/revision/") {
        last_seg(req)
    } else {
        "main".into()
    };
    let st = shared.state.lock().unwrap();
    let Some(r) = st.repos.get(&repo).filter(|r| !r.private || authorized) else {
        return Response::error(404, "Repository not found").header("X-Error-Code", "RepoNotFound");
    };
    let Some(sha) = resolve_rev(r, &rev) else {
        return Response::error(404, &format!("Invalid rev id: {rev}"))
            .header("X-Error-Code", "RevisionNotFound");
    };
    let siblings: Vec<_> = r.commits[&sha]
        .files
        .iter()
        .map(|(path, blob)| match blob {
            Blob::Regular(b) => serde_json::json!({"rfilename": path, "size": b.len(), "blobId": git_blob_id(b)}),
            Blob::Lfs { oid, size } => serde_json::json!({
                "rfilename": path, "size": size, "blobId": git_blob_id(pointer(oid, *size).as_bytes()),
                "lfs": {"sha256": oid, "size": size, "pointerSize": pointer(oid, *size).len()}
            }),
        })
        .collect();
    Response::json(
        200,
        serde_json::json!({"id": repo, "sha": sha, "private": r.private, "siblings": siblings}),
    )
}

fn pointer(oid: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n")
}

/// The server's own LFS rule: large, binary, or a weights/archive extension.
fn goes_to_lfs(path: &str, size: u64, sample: &[u8]) -> bool {
    let tracked = [
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".h5",
        ".model",
        ".npy",
        ".zip",
        ".gz",
    ]
    .iter()
    .any(|e| path.ends_with(e));
    size >= LFS_SIZE || tracked || sample.contains(&0)
}

fn preupload(shared: &Shared, req: &Request, body: &[u8]) -> Response {
    let repo = repo_of(req).unwrap();
    let rev = last_seg(req);
    let st = shared.state.lock().unwrap();
    if !may_write(&st, &repo) {
        return Response::error(403, "You don't have write access to this repository");
    }
    let Some(r) = st.repos.get(&repo) else {
        return Response::error(404, "Repository not found").header("X-Error-Code", "RepoNotFound");
    };
    let Some(sha) = resolve_rev(r, &rev) else {
        return Response::error(404, &format!("Invalid rev id: {rev}"))
            .header("X-Error-Code", "RevisionNotFound");
    };
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Response::error(400, &format!("bad JSON: {e}")),
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let mut files = Vec::new();
    for f in v["files"].as_array().cloned().unwrap_or_default() {
        let path = f["path"].as_str().unwrap_or("").to_string();
        let size = f["size"].as_u64().unwrap_or(0);
        let sample = engine
            .decode(f["sample"].as_str().unwrap_or(""))
            .unwrap_or_default();
        let mode = if goes_to_lfs(&path, size, &sample) {
            "lfs"
        } else {
            "regular"
        };
        let oid = r.commits[&sha].files.get(&path).map(|b| match b {
            Blob::Regular(c) => git_blob_id(c),
            Blob::Lfs { oid, .. } => oid.clone(),
        });
        files.push(serde_json::json!({"path": path, "uploadMode": mode, "shouldIgnore": false, "oid": oid}));
    }
    Response::json(200, serde_json::json!({"files": files, "commitOid": sha}))
}

fn batch(shared: &Shared, req: &Request, body: &[u8]) -> Response {
    if req.header("accept") != Some("application/vnd.git-lfs+json") {
        return Response::error(406, "Accept must be application/vnd.git-lfs+json");
    }
    let repo = repo_of(req).unwrap();
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Response::error(400, &format!("bad JSON: {e}")),
    };
    if v["operation"] != "upload" || v["hash_algo"] != "sha256" {
        return Response::error(400, "expected operation upload and hash_algo sha256");
    }
    let multipart_ok = v["transfers"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x == "multipart"));
    let mut st = shared.state.lock().unwrap();
    if !may_write(&st, &repo) {
        return Response::error(403, "no write access");
    }
    if !st.repos.contains_key(&repo) {
        return Response::error(404, "Repository not found");
    }
    let (threshold, chunk) = (st.opts.multipart_threshold, st.opts.chunk_size);
    let base = &shared.url;
    let mut out = Vec::new();
    let mut any_multipart = false;
    for o in v["objects"].as_array().cloned().unwrap_or_default() {
        let oid = o["oid"].as_str().unwrap_or("").to_string();
        let size = o["size"].as_u64().unwrap_or(0);
        if oid.len() != 64 || !oid.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push(serde_json::json!({"oid": oid, "size": size, "error": {"code": 422, "message": "invalid oid"}}));
            continue;
        }
        if st.objects.get(&oid).is_some_and(|obj| obj.size == size) {
            out.push(serde_json::json!({"oid": oid, "size": size}));
            continue;
        }
        st.announced.insert(oid.clone(), size);
        let verify = serde_json::json!({"href": format!("{base}/{repo}.git/info/lfs/objects/verify"), "header": {}});
        let upload = if multipart_ok && size >= threshold {
            any_multipart = true;
            let mut header = serde_json::Map::new();
            header.insert("chunk_size".into(), chunk.to_string().into());
            for n in 1..=size.div_ceil(chunk) {
                header.insert(
                    n.to_string(),
                    format!("{base}/lfs/{oid}/part/{n}?uploadId=u{oid:.8}").into(),
                );
            }
            serde_json::json!({"href": format!("{base}/lfs/{oid}/complete"), "header": header})
        } else {
            serde_json::json!({"href": format!("{base}/lfs/{oid}"), "header": {}})
        };
        out.push(
            serde_json::json!({"oid": oid, "size": size, "authenticated": true,
            "actions": {"upload": upload, "verify": verify}}),
        );
    }
    let transfer = if any_multipart { "multipart" } else { "basic" };
    Response::json(
        200,
        serde_json::json!({"transfer": transfer, "objects": out}),
    )
}

fn storage_path(shared: &Shared, name: &str) -> PathBuf {
    let n = shared.counter.fetch_add(1, Ordering::SeqCst);
    shared.storage.join(format!("{name}.{n}"))
}

fn upload_basic(shared: &Shared, req: &Request, reader: &mut BufReader<TcpStream>) -> Response {
    let oid = last_seg(req);
    let path = storage_path(shared, &oid);
    let (sha, len) = match body_to_file(reader, req.content_length, &path) {
        Ok(x) => x,
        Err(e) => return Response::error(400, &format!("upload failed: {e}")),
    };
    if sha != oid || len != req.content_length {
        let _ = std::fs::remove_file(&path);
        return Response::error(400, "content does not match the oid");
    }
    shared.state.lock().unwrap().objects.insert(
        oid,
        Object {
            size: len,
            segments: vec![path],
        },
    );
    Response::json(200, serde_json::json!({}))
}

fn upload_part(shared: &Shared, req: &Request, reader: &mut BufReader<TcpStream>) -> Response {
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let (oid, n) = (segs[1].to_string(), segs[3].parse::<u32>().unwrap_or(0));
    let path = storage_path(shared, &format!("{oid}.part{n}"));
    let (sha, len) = match body_to_file(reader, req.content_length, &path) {
        Ok(x) => x,
        Err(e) => return Response::error(400, &format!("part upload failed: {e}")),
    };
    if len != req.content_length {
        return Response::error(400, "short part");
    }
    let etag = format!("\"{}\"", &sha[..32]);
    let mut st = shared.state.lock().unwrap();
    st.pending
        .entry(oid)
        .or_default()
        .parts
        .insert(n, (path, etag.clone()));
    Response::json(200, serde_json::json!({})).header("ETag", etag)
}

fn complete(shared: &Shared, req: &Request, body: &[u8]) -> Response {
    let oid = req
        .path
        .trim_start_matches('/')
        .split('/')
        .nth(1)
        .unwrap_or("")
        .to_string();
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Response::error(400, &format!("bad JSON: {e}")),
    };
    if v["oid"] != oid.as_str() {
        return Response::error(400, "oid mismatch");
    }
    let (segments, size) = {
        let st = shared.state.lock().unwrap();
        if st.objects.contains_key(&oid) {
            return Response::json(200, serde_json::json!({}));
        }
        let Some(pending) = st.pending.get(&oid) else {
            return Response::error(404, "no upload in progress for this oid");
        };
        let size = st.announced.get(&oid).copied().unwrap_or(0);
        let parts = v["parts"].as_array().cloned().unwrap_or_default();
        let expected = size.div_ceil(st.opts.chunk_size) as usize;
        if parts.len() != expected {
            return Response::error(
                400,
                &format!("{} parts listed, {expected} expected", parts.len()),
            );
        }
        let mut segments = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let n = p["partNumber"].as_u64().unwrap_or(0) as u32;
            match pending.parts.get(&n) {
                Some((path, etag)) if n as usize == i + 1 && p["etag"] == etag.as_str() => {
                    segments.push(path.clone())
                }
                _ => return Response::error(400, &format!("part {n}: missing or wrong ETag")),
            }
        }
        (segments, size)
    };
    // Hash outside the lock: a benchmark's object is gigabytes.
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    for seg in &segments {
        let mut f = std::fs::File::open(seg).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
    }
    if hex(hasher) != oid || total != size {
        return Response::error(400, "the parts do not hash to the oid");
    }
    let mut st = shared.state.lock().unwrap();
    st.pending.remove(&oid);
    st.objects.insert(oid, Object { size, segments });
    Response::json(200, serde_json::json!({}))
}

fn verify(shared: &Shared, body: &[u8]) -> Response {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let oid = v["oid"].as_str().unwrap_or("");
    let size = v["size"].as_u64();
    let st = shared.state.lock().unwrap();
    match st.objects.get(oid) {
        Some(o) if Some(o.size) == size => Response::json(200, serde_json::json!({})),
        _ => Response::error(404, "object not found"),
    }
}

fn concurrent_commit(shared: &Shared, req: &Request) {
    let repo = repo_of(req).unwrap();
    let rev = last_seg(req);
    let mut st = shared.state.lock().unwrap();
    let r = st.repos.get_mut(&repo).unwrap();
    let head = r.refs[&rev].clone();
    let mut files = r.commits[&head].files.clone();
    files.insert("NOTES.md".into(), Blob::Regular(b"someone else\n".to_vec()));
    let c = Commit {
        parent: Some(head),
        message: "concurrent".into(),
        files,
    };
    let sha = commit_id(&c, shared.counter.fetch_add(1, Ordering::SeqCst));
    r.commits.insert(sha.clone(), c);
    r.refs.insert(rev, sha);
}

fn commit(shared: &Shared, req: &Request, body: &[u8]) -> Response {
    if req.header("content-type") != Some("application/x-ndjson") {
        return Response::error(400, "Content-Type must be application/x-ndjson");
    }
    let repo = repo_of(req).unwrap();
    let rev = last_seg(req);
    let create_pr = req.query.split('&').any(|kv| kv == "create_pr=1");
    let engine = base64::engine::general_purpose::STANDARD;
    let mut st = shared.state.lock().unwrap();
    if !may_write(&st, &repo) {
        return Response::error(403, "You don't have write access to this repository");
    }
    let objects: HashMap<String, u64> = st
        .objects
        .iter()
        .map(|(k, o)| (k.clone(), o.size))
        .collect();
    let Some(r) = st.repos.get_mut(&repo) else {
        return Response::error(404, "Repository not found");
    };
    let Some(head) = r.refs.get(&rev).cloned() else {
        return Response::error(404, &format!("Invalid rev id: {rev}"));
    };
    let mut files = r.commits[&head].files.clone();
    let (mut summary, mut parent) = (String::new(), None);
    for (i, line) in body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let v: serde_json::Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return Response::error(400, &format!("line {i}: bad JSON: {e}")),
        };
        let value = &v["value"];
        match v["key"].as_str() {
            Some("header") if i == 0 => {
                summary = value["summary"].as_str().unwrap_or("").to_string();
                parent = value["parentCommit"].as_str().map(String::from);
            }
            Some("file") => {
                if value["encoding"] != "base64" {
                    return Response::error(400, "file encoding must be base64");
                }
                let Ok(content) = engine.decode(value["content"].as_str().unwrap_or("")) else {
                    return Response::error(400, "bad base64");
                };
                files.insert(
                    value["path"].as_str().unwrap_or("").into(),
                    Blob::Regular(content),
                );
            }
            Some("lfsFile") => {
                let oid = value["oid"].as_str().unwrap_or("").to_string();
                let size = value["size"].as_u64().unwrap_or(0);
                if value["algo"] != "sha256" || objects.get(&oid) != Some(&size) {
                    return Response::error(
                        422,
                        &format!("LFS object {oid} ({size} bytes) was not uploaded"),
                    );
                }
                files.insert(
                    value["path"].as_str().unwrap_or("").into(),
                    Blob::Lfs { oid, size },
                );
            }
            Some("deletedFile") => {
                files.remove(value["path"].as_str().unwrap_or(""));
            }
            other => return Response::error(400, &format!("line {i}: unexpected key {other:?}")),
        }
    }
    if summary.is_empty() {
        return Response::error(400, "a commit needs a header with a summary");
    }
    if parent.as_ref().is_some_and(|p| *p != head) {
        return Response::error(
            412,
            "A commit has happened since. Please refresh and try again.",
        );
    }
    let c = Commit {
        parent: Some(head),
        message: summary,
        files,
    };
    let sha = commit_id(&c, shared.counter.fetch_add(1, Ordering::SeqCst));
    r.commits.insert(sha.clone(), c);
    let base = &shared.url;
    let mut answer = serde_json::json!({"success": true, "commitOid": sha, "commitUrl": format!("{base}/{repo}/commit/{sha}")});
    if create_pr {
        r.prs += 1;
        r.refs.insert(format!("refs/pr/{}", r.prs), sha);
        answer["pullRequestUrl"] = format!("{base}/{repo}/discussions/{}", r.prs).into();
    } else {
        r.refs.insert(rev, sha);
    }
    Response::json(200, answer)
}

/// `Range: bytes=a-b` / `bytes=a-` over `size` bytes, as (start, len).
fn range(req: &Request, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = req.header("range")?.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        size.saturating_sub(1)
    } else {
        b.parse::<u64>().ok()?.min(size.saturating_sub(1))
    };
    if size == 0 || start > end {
        return Some(Err(()));
    }
    Some(Ok((start, end - start + 1)))
}

fn ranged(req: &Request, size: u64, body: impl FnOnce(u64, u64) -> Body) -> Response {
    match range(req, size) {
        None => Response {
            status: 200,
            headers: vec![("Accept-Ranges".into(), "bytes".into())],
            body: body(0, size),
        },
        Some(Ok((start, len))) => Response {
            status: 206,
            headers: vec![
                ("Accept-Ranges".into(), "bytes".into()),
                (
                    "Content-Range".into(),
                    format!("bytes {start}-{}/{size}", start + len - 1),
                ),
            ],
            body: body(start, len),
        },
        Some(Err(())) => Response::error(416, "range not satisfiable")
            .header("Content-Range", format!("bytes */{size}")),
    }
}

fn resolve(shared: &Shared, req: &Request, authorized: bool) -> Response {
    let segs: Vec<&str> = req.path.trim_start_matches('/').splitn(5, '/').collect();
    if segs.len() < 5 {
        return Response::error(404, "Entry not found");
    }
    let repo = format!("{}/{}", segs[0], segs[1]);
    let rev = percent_decode(segs[3]);
    let path = percent_decode(segs[4]);
    let st = shared.state.lock().unwrap();
    let Some(r) = st.repos.get(&repo).filter(|r| !r.private || authorized) else {
        return Response::error(404, "Repository not found").header("X-Error-Code", "RepoNotFound");
    };
    let Some(sha) = resolve_rev(r, &rev) else {
        return Response::error(404, "Revision not found")
            .header("X-Error-Code", "RevisionNotFound");
    };
    match r.commits[&sha].files.get(&path) {
        None => Response::error(404, "Entry not found").header("X-Error-Code", "EntryNotFound"),
        Some(Blob::Regular(content)) => {
            let content = content.clone();
            ranged(req, content.len() as u64, |start, len| {
                Body::Bytes(content[start as usize..(start + len) as usize].to_vec())
            })
            .header("ETag", format!("\"{}\"", git_blob_id(&content)))
            .header("X-Repo-Commit", sha)
        }
        Some(Blob::Lfs { oid, size }) => Response {
            status: 302,
            headers: vec![
                ("Location".into(), format!("{}/lfs-cdn/{oid}", shared.url)),
                (
                    "ETag".into(),
                    format!("\"{}\"", git_blob_id(pointer(oid, *size).as_bytes())),
                ),
                ("X-Linked-Etag".into(), format!("\"{oid}\"")),
                ("X-Linked-Size".into(), size.to_string()),
                ("X-Repo-Commit".into(), sha),
            ],
            body: Body::Bytes(Vec::new()),
        },
    }
}

fn cdn(shared: &Shared, req: &Request) -> Response {
    let oid = last_seg(req);
    let st = shared.state.lock().unwrap();
    let Some(obj) = st.objects.get(&oid) else {
        return Response::error(404, "no such object");
    };
    let segments = obj.segments.clone();
    ranged(req, obj.size, |offset, len| Body::Segments {
        segments,
        offset,
        len,
    })
    .header("ETag", format!("\"{oid}\""))
}
