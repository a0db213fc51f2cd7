//! A client for the Hugging Face Hub's HTTP API, speaking it as huggingface_hub does:
//! `whoami-v2`, repository and branch creation, revision info, `preupload` (which files
//! go to LFS), the Git LFS batch API and the NDJSON commit.
//!
//! Every request but the commit is retried as [`crate::http`] says (408, 429 and 5xx
//! answers and broken connections; `Retry-After`, else 1 s doubling to 8 s with jitter,
//! 5 retries, as huggingface_hub's `http_backoff`). Commits are never retried blindly: [`HubClient::commit`] reports whether a
//! failure left the outcome unknown, and the caller decides (see `upload.rs`).
//!
//! The token goes only to URLs on the endpoint's origin (an LFS upload URL may point at
//! a storage bucket elsewhere), and is scrubbed out of every error message.

use super::auth::Token;
use super::repo_id::quote_revision;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Media type of the Git LFS batch API.
pub(crate) const LFS_MEDIA_TYPE: &str = "application/vnd.git-lfs+json";

pub use crate::http::RetryPolicy;
use crate::http::{is_retryable, retry_after};

/// What went wrong talking to the Hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The server answered with an error status.
    #[error("{what}: HTTP {status}{}{}", detail(.message), hint(*.status, .code.as_deref()))]
    Status {
        what: String,
        status: u16,
        message: String,
        /// The Hub's `X-Error-Code` (`RepoNotFound`, `GatedRepo`, `RevisionNotFound`,
        /// `EntryNotFound`), when it sent one.
        code: Option<String>,
    },
    /// No answer: connection refused or dropped, timeout, TLS failure.
    #[error("{what}: {message}")]
    Transport { what: String, message: String },
    /// An answer that does not follow the protocol.
    #[error("{what}: unexpected answer from the Hub: {message}")]
    Protocol { what: String, message: String },
    /// A local file could not be read while uploading it.
    #[error("{0}")]
    Local(String),
}

impl HubError {
    /// The HTTP status, when the server answered.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            HubError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The Hub's `X-Error-Code`, when the server answered with one.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            HubError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    fn protocol(what: &str, message: impl Into<String>) -> Self {
        HubError::Protocol {
            what: what.to_string(),
            message: message.into(),
        }
    }
}

/// What the Hub answered is shown as it is, with its status and error code kept.
impl From<HubError> for crate::error::Error {
    fn from(e: HubError) -> Self {
        crate::error::Error::Network {
            status: e.status(),
            code: e.code().map(String::from),
            message: e.to_string(),
        }
    }
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    }
}

/// What a status usually means, so the user knows what to change: the Hub's error code
/// when it sent one, else what the status means for an upload.
fn hint(status: u16, code: Option<&str>) -> &'static str {
    match code {
        Some("RepoNotFound") => return ": the repository does not exist, or it is private and no token given can see it (HF_TOKEN, the token file)",
        Some("GatedRepo") => return ": the repository is gated: accept its conditions on the Hub, then use that account's token (HF_TOKEN)",
        Some("RevisionNotFound") => return ": the revision (branch, tag or commit) does not exist",
        Some("EntryNotFound") => return ": the file does not exist at this revision",
        _ => {}
    }
    match status {
        401 => ": the token was rejected (invalid or expired); check --token, HF_TOKEN or the token file",
        403 => ": the token may not write here (a read-only token, or a namespace it cannot write to)",
        404 => ": the repository or revision does not exist, or the token cannot see it",
        409 => ": conflict with the repository's current state",
        412 => ": the branch moved since the upload started; rerun to upload on top of it",
        429 => ": rate limited by the Hub; try again later",
        _ => "",
    }
}

/// Result of a commit that did not succeed.
#[derive(Debug)]
pub(crate) enum CommitFailure {
    /// The server refused it: nothing was committed.
    Refused(HubError),
    /// No clear answer (dropped connection, 5xx): the commit may or may not exist.
    Unknown(HubError),
}

/// A Hub account as `whoami-v2` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Whoami {
    pub(crate) name: String,
    #[serde(default)]
    pub orgs: Vec<OrgRef>,
}

/// An organisation the user belongs to.
#[derive(Debug, Clone, Deserialize)]
pub struct OrgRef {
    pub name: String,
}

/// A file of a revision, as `/api/models/{repo}/revision/{rev}?blobs=true` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Sibling {
    pub(crate) rfilename: String,
    #[serde(default, rename = "blobId")]
    pub(crate) blob_id: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub(crate) lfs: Option<LfsInfo>,
}

/// The LFS pointer of a file.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LfsInfo {
    pub(crate) sha256: String,
    pub(crate) size: u64,
}

/// A revision: its commit and files.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RevisionInfo {
    pub(crate) sha: String,
    #[serde(default)]
    pub(crate) siblings: Vec<Sibling>,
}

/// One file offered to `preupload`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PreuploadFile {
    pub(crate) path: String,
    /// Base64 of the first 512 bytes.
    pub(crate) sample: String,
    pub(crate) size: u64,
}

/// The Hub's answer for one file: how to upload it and what is there now.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PreuploadAnswer {
    pub(crate) path: String,
    #[serde(rename = "uploadMode")]
    pub(crate) upload_mode: String,
    #[serde(default, rename = "shouldIgnore")]
    pub(crate) should_ignore: bool,
    /// The file's id at the revision (git blob sha1, or sha256 for LFS), if it exists.
    #[serde(default)]
    pub(crate) oid: Option<String>,
}

/// An object in an LFS batch request.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LfsObject {
    pub(crate) oid: String,
    pub(crate) size: u64,
}

/// The LFS batch answer.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchResponse {
    #[serde(default)]
    pub transfer: Option<String>,
    pub(crate) objects: Vec<BatchObject>,
}

/// What to do with one object: no `actions` means the server already has it.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchObject {
    pub(crate) oid: String,
    pub size: u64,
    #[serde(default)]
    pub(crate) actions: Option<BatchActions>,
    #[serde(default)]
    pub(crate) error: Option<BatchError>,
}

/// The upload and verify actions of an object.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BatchActions {
    #[serde(default)]
    pub(crate) upload: Option<LfsAction>,
    #[serde(default)]
    pub(crate) verify: Option<LfsAction>,
}

/// A URL with the headers to send to it. For multipart uploads the header map holds
/// `chunk_size` and one URL per part number.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LfsAction {
    pub(crate) href: String,
    #[serde(default)]
    pub(crate) header: BTreeMap<String, String>,
}

/// A per-object error of the batch API.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BatchError {
    pub(crate) code: i64,
    pub(crate) message: String,
}

/// What the commit endpoint answers.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CommitResponse {
    #[serde(rename = "commitUrl")]
    pub(crate) commit_url: String,
    #[serde(rename = "commitOid")]
    pub(crate) commit_oid: String,
    #[serde(default, rename = "pullRequestUrl")]
    pub(crate) pull_request_url: Option<String>,
}

/// A blocking client for one Hub endpoint, with a token or anonymous.
#[derive(Clone)]
pub struct HubClient {
    http: Client,
    endpoint: String,
    token: Option<Token>,
    retry: RetryPolicy,
}

impl HubClient {
    /// A client for `endpoint` (no trailing slash) authenticating with `token` (none:
    /// anonymous, enough for public repositories).
    pub fn new(endpoint: &str, token: Option<Token>, retry: RetryPolicy) -> Result<Self, HubError> {
        let http = Client::builder()
            .user_agent(format!("ckpt/{}; hf_hub-protocol", crate::VERSION))
            .connect_timeout(Duration::from_secs(30))
            .timeout(None)
            .build()
            .map_err(|e| HubError::Transport {
                what: "HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            retry,
        })
    }

    /// The endpoint's base URL.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The retry policy in force.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// A request to `url`, with the token when `url` is on the endpoint's origin.
    pub(crate) fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(token) if self.same_origin(url) => req.bearer_auth(token.expose()),
            _ => req,
        }
    }

    fn same_origin(&self, url: &str) -> bool {
        url == self.endpoint
            || url
                .strip_prefix(&self.endpoint)
                .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
    }

    /// Sends the request `build` makes (once per attempt: a streamed body is reopened),
    /// retrying on retryable statuses and broken connections; an error status that is
    /// not retried, or still there after the last retry, is an error.
    pub(crate) fn send(
        &self,
        what: &str,
        build: &mut dyn FnMut() -> Result<RequestBuilder, HubError>,
    ) -> Result<Response, HubError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt > self.retry.max_retries;
            let started = Instant::now();
            let wait = match build()?.send() {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    tracing::debug!("{what}: HTTP {status} in {:?}", started.elapsed());
                    if resp.status().is_success() {
                        return Ok(resp);
                    }
                    if last || !is_retryable(status) {
                        return Err(self.status_error(what, resp));
                    }
                    let Some(wait) = self.retry.wait(attempt, retry_after(resp.headers())) else {
                        return Err(self.status_error(what, resp));
                    };
                    tracing::warn!(
                        "{what}: HTTP {status}; retrying in {:.1} s ({attempt}/{})",
                        wait.as_secs_f64(),
                        self.retry.max_retries
                    );
                    wait
                }
                Err(e) => {
                    let err = self.transport_error(what, e);
                    if last {
                        return Err(err);
                    }
                    let wait = self.retry.backoff(attempt);
                    tracing::warn!(
                        "{err}; retrying in {:.1} s ({attempt}/{})",
                        wait.as_secs_f64(),
                        self.retry.max_retries
                    );
                    wait
                }
            };
            std::thread::sleep(wait);
        }
    }

    /// Sends `req` once, for requests that must not be repeated blindly.
    fn send_once(&self, what: &str, req: RequestBuilder) -> Result<Response, HubError> {
        let resp = req.send().map_err(|e| self.transport_error(what, e))?;
        tracing::debug!("{what}: HTTP {}", resp.status().as_u16());
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.status_error(what, resp))
        }
    }

    /// An error for a failed status, with the server's message (token scrubbed).
    pub(crate) fn status_error(&self, what: &str, resp: Response) -> HubError {
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let header_msg = header("x-error-message");
        let code = header("x-error-code");
        let body = resp.text().unwrap_or_default();
        let message = header_msg.unwrap_or_else(|| server_message(&body));
        HubError::Status {
            what: what.to_string(),
            status,
            message: self.redact(&message),
            code,
        }
    }

    fn transport_error(&self, what: &str, e: reqwest::Error) -> HubError {
        // `what` says which request; the URL may be a pre-signed storage URL whose
        // query string is a credential, so it is left out.
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        HubError::Transport {
            what: what.to_string(),
            message: self.redact(&message),
        }
    }

    /// `text` with the token (if any) masked.
    pub(crate) fn redact(&self, text: &str) -> String {
        match &self.token {
            Some(token) => token.redact(text),
            None => text.to_string(),
        }
    }

    /// Whether requests carry a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Parses a JSON answer.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        resp: Response,
    ) -> Result<T, HubError> {
        let text = resp.text().map_err(|e| self.transport_error(what, e))?;
        serde_json::from_str(&text).map_err(|e| HubError::protocol(what, format!("{e}")))
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/{path}", self.endpoint)
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        url: &str,
    ) -> Result<T, HubError> {
        let resp = self.send(what, &mut || {
            Ok(self
                .request(Method::GET, url)
                .timeout(Duration::from_secs(120)))
        })?;
        self.json(what, resp)
    }

    fn post_json<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        url: &str,
        body: &B,
    ) -> Result<T, HubError> {
        let resp = self.send(what, &mut || {
            Ok(self
                .request(Method::POST, url)
                .json(body)
                .timeout(Duration::from_secs(120)))
        })?;
        self.json(what, resp)
    }

    /// The account the token belongs to.
    pub(crate) fn whoami(&self) -> Result<Whoami, HubError> {
        self.get_json("checking the token (whoami)", &self.api("whoami-v2"))
    }

    /// Creates model repository `repo` (`namespace/name`); an existing one is fine
    /// (`Ok(false)`), as `exist_ok=True`.
    pub(crate) fn create_repo(&self, repo: &str, private: bool) -> Result<bool, HubError> {
        let (namespace, name) = repo.split_once('/').unwrap_or(("", repo));
        let mut body =
            serde_json::json!({"name": name, "organization": namespace, "type": "model"});
        if private {
            body["visibility"] = "private".into();
            body["private"] = true.into();
        }
        let what = format!("creating repository {repo}");
        let url = self.api("repos/create");
        match self.send(&what, &mut || {
            Ok(self
                .request(Method::POST, &url)
                .json(&body)
                .timeout(Duration::from_secs(120)))
        }) {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates branch `branch` of `repo` from its default branch; an existing one is
    /// fine (`Ok(false)`).
    pub(crate) fn create_branch(&self, repo: &str, branch: &str) -> Result<bool, HubError> {
        let url = self.api(&format!("models/{repo}/branch/{}", quote_revision(branch)));
        let what = format!("creating branch {branch} of {repo}");
        match self.send(&what, &mut || {
            Ok(self
                .request(Method::POST, &url)
                .json(&serde_json::json!({}))
                .timeout(Duration::from_secs(120)))
        }) {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The head commit of `revision` and its files, with their blob ids and LFS
    /// pointers.
    pub(crate) fn revision(&self, repo: &str, revision: &str) -> Result<RevisionInfo, HubError> {
        let url = self.api(&format!(
            "models/{repo}/revision/{}?blobs=true",
            quote_revision(revision)
        ));
        self.get_json(&format!("reading {repo}@{revision}"), &url)
    }

    /// Asks which files go to LFS and what the revision already holds, 256 at a time.
    pub(crate) fn preupload(
        &self,
        repo: &str,
        revision: &str,
        files: &[PreuploadFile],
        create_pr: bool,
    ) -> Result<Vec<PreuploadAnswer>, HubError> {
        #[derive(Deserialize)]
        struct Answer {
            files: Vec<PreuploadAnswer>,
        }
        let mut url = self.api(&format!(
            "models/{repo}/preupload/{}",
            quote_revision(revision)
        ));
        if create_pr {
            url.push_str("?create_pr=1");
        }
        let mut answers = Vec::new();
        for chunk in files.chunks(256) {
            let body = serde_json::json!({ "files": chunk });
            let answer: Answer = self.post_json("preupload", &url, &body)?;
            answers.extend(answer.files);
        }
        Ok(answers)
    }

    /// The LFS batch API: what to do to upload each object.
    pub(crate) fn lfs_batch(
        &self,
        repo: &str,
        revision: &str,
        objects: &[LfsObject],
    ) -> Result<BatchResponse, HubError> {
        let url = format!("{}/{repo}.git/info/lfs/objects/batch", self.endpoint);
        let body = serde_json::json!({
            "operation": "upload",
            "transfers": ["basic", "multipart"],
            "objects": objects,
            "hash_algo": "sha256",
            "ref": {"name": revision},
        });
        let what = "LFS batch";
        let resp = self.send(what, &mut || {
            Ok(self
                .request(Method::POST, &url)
                .header(reqwest::header::ACCEPT, LFS_MEDIA_TYPE)
                .header(reqwest::header::CONTENT_TYPE, LFS_MEDIA_TYPE)
                .body(serde_json::to_vec(&body).expect("JSON"))
                .timeout(Duration::from_secs(120)))
        })?;
        self.json(what, resp)
    }

    /// Posts an NDJSON commit once. Failures say whether the commit surely did not
    /// happen ([`CommitFailure::Refused`]) or may have ([`CommitFailure::Unknown`]).
    pub(crate) fn commit(
        &self,
        repo: &str,
        revision: &str,
        ndjson: Vec<u8>,
        create_pr: bool,
    ) -> Result<CommitResponse, CommitFailure> {
        let mut url = self.api(&format!(
            "models/{repo}/commit/{}",
            quote_revision(revision)
        ));
        if create_pr {
            url.push_str("?create_pr=1");
        }
        let what = format!("committing to {repo}@{revision}");
        let req = self
            .request(Method::POST, &url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(ndjson)
            .timeout(Duration::from_secs(600));
        match self.send_once(&what, req) {
            Ok(resp) => self.json(&what, resp).map_err(CommitFailure::Unknown),
            Err(e) => match e.status() {
                Some(s) if s < 500 && s != 408 && s != 429 => Err(CommitFailure::Refused(e)),
                Some(429) => Err(CommitFailure::Refused(e)),
                _ => Err(CommitFailure::Unknown(e)),
            },
        }
    }
}

/// The server's explanation in an error body: `{"error": "..."}` or the text itself.
fn server_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(s) = v.get("error").and_then(|e| e.as_str()) {
            return s.to_string();
        }
        if let Some(s) = v.get("message").and_then(|e| e.as_str()) {
            return s.to_string();
        }
    }
    let text = body.trim().replace('\n', " ");
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_come_from_json_or_text() {
        assert_eq!(
            server_message(r#"{"error":"Repository not found"}"#),
            "Repository not found"
        );
        assert_eq!(server_message("plain\ntext"), "plain text");
        assert_eq!(server_message(&"x".repeat(400)).len(), 303);
    }

    #[test]
    fn the_token_goes_only_to_the_endpoint() {
        let c = HubClient::new(
            "http://127.0.0.1:9",
            Token::new("hf_x"),
            RetryPolicy::default(),
        )
        .unwrap();
        assert!(c.same_origin("http://127.0.0.1:9/api/whoami-v2"));
        assert!(!c.same_origin("http://127.0.0.1:99/api"));
        assert!(!c.same_origin("http://127.0.0.1:9.evil.com/x"));
        assert!(!c.same_origin("https://s3.amazonaws.com/bucket/obj"));
    }
}
