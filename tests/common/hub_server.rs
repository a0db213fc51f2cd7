//! A Hugging Face Hub stand-in for tests and benchmarks: a small HTTP/1.1 server on
//! loopback implementing the parts of the Hub API that uploads and downloads use, as
//! huggingface_hub and the hf-hub crate expect them:
//!
//! - `GET /api/whoami-v2`, `POST /api/repos/create` (409 when the repo exists, 403
//!   outside the token's namespaces), `POST /api/models/{repo}/branch/{b}`,
//!   `GET /api/models/{repo}[/revision/{rev}]` (siblings with blob ids and LFS pointers);
//! - `GET /api/models/{repo}/refs[?include_prs=1]` (route `refs`): branches (and PR
//!   refs `refs/pr/N` when asked), sorted, with their commits;
//! - `GET /api/models/{repo}/tree/{rev}[/{path}][?recursive=true]` (route `tree`):
//!   files with blob ids (LFS ones with `lfs.oid`/`size`/`pointerSize`) and
//!   directories, `Options::tree_page` entries a page, the next page in a `Link:
//!   <URL>; rel="next"` header (a `cursor` parameter);
//! - `POST /api/models/{repo}/preupload/{rev}` (LFS for large, binary or weight files;
//!   the `oid` of files already at the revision);
//! - `POST /{repo}.git/info/lfs/objects/batch`: basic uploads, and multipart ones (a
//!   `chunk_size` and one URL per part) above a size threshold; objects it already has
//!   get no actions; part `PUT`s answer an `ETag`; completion checks every part's ETag
//!   and the sha256 of the whole; `verify` checks the object exists with its size;
//! - `POST /api/models/{repo}/commit/{rev}` (NDJSON; `parentCommit` must be the head,
//!   else 412; LFS files must reference stored objects; `create_pr=1` opens a PR ref);
//! - `GET /{repo}/resolve/{rev}/{path}`: regular files with `ETag` and `X-Repo-Commit`,
//!   LFS files by a 302 to a "CDN" URL (route `cdn`; another host name for this server
//!   with `Options::cdn_host`, as the Hub's CDN is another host) with `X-Linked-Etag` /
//!   `X-Linked-Size`, byte ranges (`206` + `Content-Range`), as the hf-hub crate reads
//!   them.
//!
//! Reads (`refs`, `tree`, `revision`, `resolve`) follow the Hub's access rules: a token
//! that is not the valid one is a 401 (`Invalid credentials in Authorization header`)
//! even on public repos; a missing repo, or a private one without the token, is
//! `X-Error-Code: RepoNotFound`, 401 without an `Authorization` header and 404 with
//! one; the files of a gated repo need the token (403, `GatedRepo`; its metadata stays
//! readable, as on the Hub); then `RevisionNotFound` and `EntryNotFound` (404s).
//!
//! Faults can be injected per route (an error status, `Retry-After`, a connection
//! dropped before or after handling, a body cut or stalled after N bytes), and every
//! request is logged for assertions. LFS objects are stored on disk and streamed in
//! both directions, so a benchmark can push gigabytes through it; the bytes the CDN
//! sent are counted. Every response closes its connection.

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
    /// Entries in one page of a `tree` listing (the Hub's is 1000).
    pub tree_page: usize,
    /// The host name the `resolve` redirects of LFS files name, on the same port (e.g.
    /// `localhost`): another host than the API's, as the Hub's CDN is
    /// (`cdn-lfs.hf.co`). huggingface_hub 2.x follows a same-host redirect of its
    /// `HEAD` and then misses `X-Repo-Commit`; it stops at a cross-host one. `None`:
    /// the API's own `127.0.0.1`.
    pub cdn_host: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: "hf_TestTokenForTheLoopbackHub".into(),
            user: "tester".into(),
            orgs: vec!["ckpt-org".into()],
            multipart_threshold: 64 * 1024,
            chunk_size: 32 * 1024,
            tree_page: 1000,
            cdn_host: None,
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
    /// Send the status line and headers (with the full `Content-Length`) and the first
    /// N bytes of the body, then close the connection: a download cut short. Waits for
    /// a successful `GET` whose body is longer than N (meant for `cdn` and `resolve` of
    /// a regular file: HEADs, 302s, errors and hf-hub's one-byte `Range: bytes=0-0`
    /// probe are passed over).
    /// Logged with status 0.
    DropMidBody(u64),
    /// Like `DropMidBody`, but the connection stays open without sending more until the
    /// server stops or 60 s pass: a stuck CDN node (the client's read timeout must
    /// fire). Logged with status 0 as soon as the N bytes are sent.
    StallMidBody(u64),
}

impl FaultAction {
    /// The body bytes a fault lets through, for the faults that cut a body.
    fn body_cut(&self) -> Option<u64> {
        match self {
            Self::DropMidBody(n) | Self::StallMidBody(n) => Some(*n),
            _ => None,
        }
    }
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
    /// Files need the token (the stand-in's one account has accepted the conditions).
    gated: bool,
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
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    _storage: tempfile::TempDir,
}

struct Shared {
    url: String,
    /// Where `resolve` sends LFS downloads: `url`, or it with `Options::cdn_host`.
    cdn_url: String,
    state: Mutex<State>,
    storage: PathBuf,
    counter: AtomicU64,
    /// Set when the server stops: stalled connections give up.
    stop: AtomicBool,
    /// Body bytes the `cdn` route has sent.
    served: AtomicU64,
}

impl HubServer {
    /// Starts a server on `127.0.0.1:0`, storing LFS objects under a temporary
    /// directory in `storage_parent` (the system's when `None`).
    pub fn start(opts: Options, storage_parent: Option<&std::path::Path>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let cdn_url = match &opts.cdn_host {
            Some(host) => format!("http://{host}:{}", addr.port()),
            None => url.clone(),
        };
        let storage = match storage_parent {
            Some(p) => tempfile::tempdir_in(p).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let state = Mutex::new(State {
            opts,
            repos: HashMap::new(),
            objects: HashMap::new(),
            announced: HashMap::new(),
            pending: HashMap::new(),
            faults: Vec::new(),
            log: Vec::new(),
        });
        let shared = Arc::new(Shared {
            url: url.clone(),
            cdn_url,
            state,
            storage: storage.path().to_path_buf(),
            counter: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            served: AtomicU64::new(0),
        });
        let server = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            while !server.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&server);
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
            shared,
            thread: Some(thread),
            _storage: storage,
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    /// The valid token.
    pub fn token(&self) -> String {
        self.st().opts.token.clone()
    }

    /// Adds a fault.
    pub fn fault(&self, fault: Fault) {
        self.st().faults.push(fault);
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<LogEntry> {
        self.st().log.clone()
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

    /// Requests of `route`, whatever their outcome, in order.
    pub fn requests_for(&self, route: &str) -> Vec<LogEntry> {
        self.log()
            .into_iter()
            .filter(|e| e.route == route)
            .collect()
    }

    /// Body bytes the `cdn` route (LFS objects) has sent, cut bodies included: 0 after
    /// `clear_log` means nothing was downloaded since. Exact once responses are done.
    pub fn objects_served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Forgets the log and the count of `objects_served`.
    pub fn clear_log(&self) {
        self.st().log.clear();
        self.shared.served.store(0, Ordering::SeqCst);
    }

    /// The commit `reference` of `repo` points at.
    pub fn head(&self, repo: &str, reference: &str) -> Option<String> {
        let st = self.st();
        st.repos.get(repo)?.refs.get(reference).cloned()
    }

    /// The number of commits in the history of `reference`.
    pub fn history_len(&self, repo: &str, reference: &str) -> usize {
        let st = self.st();
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
        let st = self.st();
        let r = st.repos.get(repo)?;
        Some(r.commits[r.refs.get(reference)?].message.clone())
    }

    /// The paths at `reference`.
    pub fn files(&self, repo: &str, reference: &str) -> Vec<String> {
        let st = self.st();
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
        let st = self.st();
        let r = st.repos.get(repo)?;
        let blob = r.commits[r.refs.get(reference)?].files.get(path)?;
        Some(matches!(blob, Blob::Lfs { .. }))
    }

    /// Whether the server holds a complete LFS object `oid`.
    pub fn has_object(&self, oid: &str) -> bool {
        self.st().objects.contains_key(oid)
    }

    /// Creates a repository directly (as if made elsewhere).
    pub fn create_repo(&self, repo: &str, private: bool) {
        let mut st = self.st();
        let counter = st.repos.len() as u64 + 1_000_000;
        st.repos.insert(repo.into(), new_repo(private, counter));
    }

    /// Commits `files` (path, bytes) to `main` of `repo` directly (no upload protocol),
    /// creating the repo if needed: fixtures for download tests.
    pub fn put_files(&self, repo: &str, files: &[(&str, Vec<u8>)]) {
        let mut st = self.st();
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

    /// Commits `files` (path, bytes) onto `branch` of `repo` directly, creating the repo
    /// (public) if needed and the branch from main's head if missing; returns the new
    /// commit, which holds the parent's files plus these. Weights (`.safetensors`,
    /// `.bin`, `.pt`, `.pth`) and files of at least `LFS_SIZE` go to LFS, stored as
    /// objects the CDN serves. A `refs/pr/N` branch is a pull request.
    pub fn put_revision(&self, repo: &str, branch: &str, files: &[(&str, Vec<u8>)]) -> String {
        // Objects are written before the lock is taken: fixtures may be large.
        let blobs: Vec<(String, Blob)> = files
            .iter()
            .map(|(path, bytes)| (path.to_string(), fixture_blob(&self.shared, path, bytes)))
            .collect();
        let counter = self.shared.counter.fetch_add(2, Ordering::SeqCst);
        let mut st = self.st();
        let r = st
            .repos
            .entry(repo.into())
            .or_insert_with(|| new_repo(false, counter));
        let parent = r.refs.get(branch).unwrap_or(&r.refs["main"]).clone();
        let mut commit = r.commits[&parent].clone();
        commit.parent = Some(parent);
        commit.message = format!("fixture on {branch}");
        commit.files.extend(blobs);
        let sha = commit_id(&commit, counter + 1);
        r.commits.insert(sha.clone(), commit);
        r.refs.insert(branch.into(), sha.clone());
        // Pull requests opened later by a commit get the next number.
        if let Some(n) = branch.strip_prefix("refs/pr/").and_then(|n| n.parse().ok()) {
            r.prs = r.prs.max(n);
        }
        sha
    }

    /// Makes `repo` private or public.
    pub fn set_private(&self, repo: &str, private: bool) {
        self.with_repo(repo, |r| r.private = private);
    }

    /// Gates `repo`'s files (or ungates them): only the token may download them.
    pub fn set_gated(&self, repo: &str, gated: bool) {
        self.with_repo(repo, |r| r.gated = gated);
    }

    fn with_repo(&self, repo: &str, f: impl FnOnce(&mut Repo)) {
        let mut st = self.st();
        let r = st.repos.get_mut(repo);
        f(r.unwrap_or_else(|| panic!("no repository {repo} on the stand-in Hub")));
    }
}

/// How `put_revision` stores a file: as the Hub's LFS rule would, the object on disk.
fn fixture_blob(shared: &Shared, path: &str, bytes: &[u8]) -> Blob {
    let weights = [".safetensors", ".bin", ".pt", ".pth"];
    let size = bytes.len() as u64;
    if size < LFS_SIZE && !weights.iter().any(|e| path.ends_with(e)) {
        return Blob::Regular(bytes.to_vec());
    }
    let oid = hex(Sha256::new_with_prefix(bytes));
    if !shared.state.lock().unwrap().objects.contains_key(&oid) {
        let file = storage_path(shared, &oid);
        std::fs::write(&file, bytes).expect("write a fixture object");
        let object = Object {
            size,
            segments: vec![file],
        };
        shared
            .state
            .lock()
            .unwrap()
            .objects
            .insert(oid.clone(), object);
    }
    Blob::Lfs { oid, size }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
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

    fn body_len(&self) -> u64 {
        match &self.body {
            Body::Bytes(b) => b.len() as u64,
            Body::Segments { len, .. } => *len,
        }
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

/// Writes `resp`, its body cut after `limit` bytes (the headers still announce all of
/// it, as a connection lost mid-download looks); returns the body bytes the socket
/// took, also added to `served` when given. Errors only end the writing: the client
/// is gone.
fn write_response(
    stream: &mut TcpStream,
    resp: Response,
    head_only: bool,
    limit: u64,
    served: Option<&AtomicU64>,
) -> u64 {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.body_len()
    ));
    if stream.write_all(head.as_bytes()).is_err() || head_only {
        let _ = stream.flush();
        return 0;
    }
    let mut out = Counting {
        inner: stream,
        written: 0,
        served,
    };
    let _ = write_body(&mut out, resp.body, limit);
    let _ = out.flush();
    out.written
}

fn write_body(out: &mut impl Write, body: Body, limit: u64) -> std::io::Result<()> {
    let (segments, mut offset, mut len) = match body {
        Body::Bytes(b) => return out.write_all(&b[..limit.min(b.len() as u64) as usize]),
        Body::Segments {
            segments,
            offset,
            len,
        } => (segments, offset, len.min(limit)),
    };
    let mut buf = vec![0u8; 1 << 20];
    for seg in segments {
        if len == 0 {
            break;
        }
        let seg_len = std::fs::metadata(&seg)?.len();
        if offset >= seg_len {
            offset -= seg_len;
            continue;
        }
        let mut f = std::fs::File::open(&seg)?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
        let mut take = (seg_len - offset).min(len);
        len -= take;
        offset = 0;
        // Our own copy loop with a large buffer: io::copy into a wrapper would move a
        // benchmark's gigabytes 8 KiB at a time.
        while take > 0 {
            let n = f.read(&mut buf[..take.min(1 << 20) as usize])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            out.write_all(&buf[..n])?;
            take -= n as u64;
        }
    }
    Ok(())
}

/// Counts the bytes the socket took. The shared counter is raised before each write
/// and lowered by what was not taken, so a client holding the bytes never sees a count
/// short of them.
struct Counting<'a> {
    inner: &'a mut TcpStream,
    written: u64,
    served: Option<&'a AtomicU64>,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let offered = buf.len() as u64;
        if let Some(s) = self.served {
            s.fetch_add(offered, Ordering::SeqCst);
        }
        let result = self.inner.write(buf);
        let took = *result.as_ref().unwrap_or(&0) as u64;
        if let Some(s) = self.served {
            s.fetch_sub(offered - took, Ordering::SeqCst);
        }
        self.written += took;
        result
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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
        ("GET", ["api", "models", _, _, "refs"]) => ("refs", None, None),
        ("GET", ["api", "models", _, _, "tree", _, ..]) => ("tree", None, None),
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
    // Faults that cut a body wait until there is one (see below).
    let fault = take_fault(shared, route, part, |a| a.body_cut().is_none());
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
            let resp = Response::error(*s, "injected fault");
            write_response(&mut stream, resp, false, u64::MAX, None);
            return;
        }
        Some(FaultAction::RetryAfter(secs)) => {
            drain(&mut reader, req.content_length);
            log(429);
            let resp = Response::error(429, "slow down").header("Retry-After", secs.to_string());
            write_response(&mut stream, resp, false, u64::MAX, None);
            return;
        }
        Some(FaultAction::EchoAuthorization(s)) => {
            drain(&mut reader, req.content_length);
            log(*s);
            let echoed = req.header("authorization").unwrap_or("").to_string();
            let msg = format!("rejected request with header Authorization: {echoed}");
            write_response(
                &mut stream,
                Response::error(*s, &msg),
                false,
                u64::MAX,
                None,
            );
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
    // Only object bytes count, not the JSON of an error.
    let object = route == "cdn" && matches!(resp.status, 200 | 206);
    let served = object.then_some(&shared.served);
    // A cut waits for a download to cut: a successful GET with more than N bytes.
    let len = resp.body_len();
    let cut = match (&fault, req.method.as_str(), resp.status) {
        (None, "GET", 200..=299) => take_fault(shared, route, part, |a| {
            a.body_cut().is_some_and(|n| n < len)
        }),
        _ => None,
    };
    let Some(cut) = cut else {
        log(resp.status);
        write_response(&mut stream, resp, req.method == "HEAD", u64::MAX, served);
        return;
    };
    write_response(&mut stream, resp, false, cut.body_cut().unwrap(), served);
    // Logged before the connection ends, so a client that saw the cut sees the entry.
    log(0);
    if matches!(cut, FaultAction::StallMidBody(_)) {
        stall(shared);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Holds a connection without sending anything, as a stuck CDN node does, until the
/// server stops or 60 s pass.
fn stall(shared: &Shared) {
    let until = Instant::now() + Duration::from_secs(60);
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Takes one use of the first fault for this request whose action `pick` accepts.
fn take_fault(
    shared: &Shared,
    route: &str,
    part: Option<u32>,
    pick: impl Fn(&FaultAction) -> bool,
) -> Option<FaultAction> {
    let mut st = shared.state.lock().unwrap();
    let i = st.faults.iter().position(|f| {
        f.route == route && f.times > 0 && (f.part.is_none() || f.part == part) && pick(&f.action)
    })?;
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
        "revision" => revision(shared, req),
        "refs" => refs(shared, req),
        "tree" => tree(shared, req),
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
        "resolve" => resolve(shared, req),
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

/// The Hub's read rules for `repo`, in its order. A token that is not the valid one
/// is refused even on a public repo. A repo the caller may not see answers as a missing
/// one does (401 to an anonymous caller, 404 to one with a token), so private names do
/// not leak. `files`: the request reads file content, which a gated repo keeps for the
/// token (its metadata, refs and tree stay public, as on the Hub).
fn readable<'a>(
    shared: &Shared,
    st: &'a State,
    req: &Request,
    repo: &str,
    files: bool,
) -> Result<&'a Repo, Response> {
    let sent = req.header("authorization");
    let valid = sent == Some(&format!("Bearer {}", st.opts.token));
    if sent.is_some() && !valid {
        return Err(Response::error(
            401,
            "Invalid credentials in Authorization header",
        ));
    }
    let Some(r) = st.repos.get(repo).filter(|r| !r.private || valid) else {
        let msg = format!(
            "Repository Not Found for url: {}{}. Please make sure you specified the correct \
             `repo_id` and `repo_type`. If you are trying to access a private or gated repo, \
             make sure you are authenticated.",
            shared.url, req.target
        );
        let status = if sent.is_none() { 401 } else { 404 };
        return Err(Response::error(status, &msg).header("X-Error-Code", "RepoNotFound"));
    };
    if files && r.gated && !valid {
        let msg = format!(
            "Access to model {repo} is restricted. You must have access to it and be \
             authenticated to access it. Please log in."
        );
        return Err(Response::error(403, &msg).header("X-Error-Code", "GatedRepo"));
    }
    Ok(r)
}

fn revision_not_found(rev: &str) -> Response {
    Response::error(404, &format!("Invalid rev id: {rev}"))
        .header("X-Error-Code", "RevisionNotFound")
}

fn entry_not_found(path: &str, rev: &str) -> Response {
    Response::error(404, &format!("Entry not found: {path} at {rev}"))
        .header("X-Error-Code", "EntryNotFound")
}

fn revision(shared: &Shared, req: &Request) -> Response {
    let repo = repo_of(req).unwrap();
    let rev = if req.path.contains("/revision/") {
        last_seg(req)
    } else {
        "main".into()
    };
    let st = shared.state.lock().unwrap();
    let r = match readable(shared, &st, req, &repo, false) {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let Some(sha) = resolve_rev(r, &rev) else {
        return revision_not_found(&rev);
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
        serde_json::json!({"id": repo, "sha": sha, "private": r.private,
            "gated": if r.gated { serde_json::json!("manual") } else { serde_json::json!(false) },
            "siblings": siblings}),
    )
}

/// A query parameter, percent-decoded.
fn query_param(req: &Request, name: &str) -> Option<String> {
    req.query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// A boolean query parameter: `1` or `true` (Python's requests sends `True`).
fn query_flag(req: &Request, name: &str) -> bool {
    query_param(req, name).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

fn refs(shared: &Shared, req: &Request) -> Response {
    let repo = repo_of(req).unwrap();
    let st = shared.state.lock().unwrap();
    let r = match readable(shared, &st, req, &repo, false) {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let git_ref = |name: &str, full: String, sha: &str| serde_json::json!({"name": name, "ref": full, "targetCommit": sha});
    // `refs` is a BTreeMap: branches come sorted by name.
    let branches: Vec<_> = r
        .refs
        .iter()
        .filter(|(name, _)| !name.starts_with("refs/pr/"))
        .map(|(name, sha)| git_ref(name, format!("refs/heads/{name}"), sha))
        .collect();
    let mut answer = serde_json::json!({"branches": branches, "converts": [], "tags": []});
    if query_flag(req, "include_prs") {
        // By number: refs/pr/10 after refs/pr/9.
        let mut prs: Vec<(u32, &String, &String)> = r
            .refs
            .iter()
            .filter_map(|(name, sha)| {
                let n = name.strip_prefix("refs/pr/")?.parse().ok()?;
                Some((n, name, sha))
            })
            .collect();
        prs.sort();
        let prs: Vec<_> = prs
            .into_iter()
            .map(|(_, name, sha)| git_ref(name, name.clone(), sha))
            .collect();
        answer["pullRequests"] = prs.into();
    }
    Response::json(200, answer)
}

fn tree(shared: &Shared, req: &Request) -> Response {
    // api/models/{ns}/{name}/tree/{rev}[/{path}]
    let segs: Vec<&str> = req.path.trim_start_matches('/').splitn(7, '/').collect();
    let repo = format!("{}/{}", segs[2], segs[3]);
    let rev = percent_decode(segs[5]);
    let dir = percent_decode(segs.get(6).copied().unwrap_or(""));
    let dir = dir.trim_matches('/');
    let st = shared.state.lock().unwrap();
    let r = match readable(shared, &st, req, &repo, false) {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let Some(sha) = resolve_rev(r, &rev) else {
        return revision_not_found(&rev);
    };
    let recursive = query_flag(req, "recursive");
    let Some(entries) = tree_entries(&r.commits[&sha].files, dir, recursive) else {
        return entry_not_found(dir, &rev);
    };
    let page = st.opts.tree_page.max(1);
    drop(st);
    paginate(shared, req, entries, page)
}

/// The entries under `dir` ("" for the root) sorted by path: its files and
/// subdirectories, or with `recursive` everything below it (directories included, as
/// the Hub lists them). `None` when `dir` holds no file.
fn tree_entries(
    files: &BTreeMap<String, Blob>,
    dir: &str,
    recursive: bool,
) -> Option<Vec<serde_json::Value>> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut out = BTreeMap::new();
    for (path, blob) in files.iter().filter(|(p, _)| p.starts_with(&prefix)) {
        let rest = &path[prefix.len()..];
        // The directories between `dir` and the file: the first, or all when recursive.
        let mut end = 0;
        while let Some(i) = rest[end..].find('/') {
            let sub = format!("{prefix}{}", &rest[..end + i]);
            out.entry(sub.clone())
                .or_insert_with(|| dir_entry(files, &sub));
            end += i + 1;
            if !recursive {
                break;
            }
        }
        if recursive || !rest.contains('/') {
            out.insert(path.clone(), file_entry(path, blob));
        }
    }
    (dir.is_empty() || !out.is_empty()).then(|| out.into_values().collect())
}

fn file_entry(path: &str, blob: &Blob) -> serde_json::Value {
    match blob {
        Blob::Regular(b) => serde_json::json!({
            "type": "file", "oid": git_blob_id(b), "size": b.len(), "path": path
        }),
        Blob::Lfs { oid, size } => {
            let ptr = pointer(oid, *size);
            serde_json::json!({
                "type": "file", "oid": git_blob_id(ptr.as_bytes()), "size": size, "path": path,
                "lfs": {"oid": oid, "size": size, "pointerSize": ptr.len()}
            })
        }
    }
}

/// A directory's entry; its oid hashes what it holds, so it changes with its content
/// as a git tree id does.
fn dir_entry(files: &BTreeMap<String, Blob>, dir: &str) -> serde_json::Value {
    let prefix = format!("{dir}/");
    let mut h = Sha1::new();
    for (path, blob) in files.iter().filter(|(p, _)| p.starts_with(&prefix)) {
        h.update(path.as_bytes());
        h.update(file_entry(path, blob)["oid"].as_str().unwrap().as_bytes());
    }
    serde_json::json!({"type": "directory", "oid": hex(h), "size": 0, "path": dir})
}

/// One page of `entries` from the `cursor` parameter on; when more follow, a `Link`
/// header with the next page's absolute URL (the request's, with the next cursor), as
/// huggingface_hub's pagination follows it.
fn paginate(
    shared: &Shared,
    req: &Request,
    entries: Vec<serde_json::Value>,
    page: usize,
) -> Response {
    let start = match query_param(req, "cursor").map(|c| c.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n.min(entries.len()),
        Some(Err(_)) => return Response::error(400, "invalid cursor"),
    };
    let end = (start + page).min(entries.len());
    let more = end < entries.len();
    let resp = Response::json(200, entries[start..end].to_vec().into());
    if !more {
        return resp;
    }
    let mut query: Vec<String> = req
        .query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("cursor="))
        .map(String::from)
        .collect();
    query.push(format!("cursor={end}"));
    // The target as sent: a dataset's listing pages on under /api/datasets/.
    let path = req.target.split('?').next().unwrap_or("");
    let next = format!("{}{path}?{}", shared.url, query.join("&"));
    resp.header("Link", format!("<{next}>; rel=\"next\""))
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

fn resolve(shared: &Shared, req: &Request) -> Response {
    let segs: Vec<&str> = req.path.trim_start_matches('/').splitn(5, '/').collect();
    if segs.len() < 5 {
        return Response::error(404, "Entry not found");
    }
    let repo = format!("{}/{}", segs[0], segs[1]);
    let rev = percent_decode(segs[3]);
    let path = percent_decode(segs[4]);
    let st = shared.state.lock().unwrap();
    let r = match readable(shared, &st, req, &repo, true) {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let Some(sha) = resolve_rev(r, &rev) else {
        return revision_not_found(&rev);
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
                (
                    "Location".into(),
                    format!("{}/lfs-cdn/{oid}", shared.cdn_url),
                ),
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
