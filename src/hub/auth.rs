//! Where the Hub is and who we are to it: the endpoint (`HF_ENDPOINT`) and the access
//! token (`--token`, `HF_TOKEN`, the token file `hf auth login` writes), found in the
//! order huggingface_hub looks for them.
//!
//! The token is a [`Token`], whose `Debug` and `Display` print a mask: it can sit in
//! structs that are logged without ever reaching a log. [`Token::redact`] scrubs it out
//! of any text that came back from a server before that text is shown.

use std::path::PathBuf;

/// The public Hub.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The Hub's base URL: `HF_ENDPOINT` (without a trailing slash), else the public Hub.
pub(crate) fn endpoint() -> String {
    match std::env::var("HF_ENDPOINT") {
        Ok(url) if !url.trim().is_empty() => url.trim().trim_end_matches('/').to_string(),
        _ => DEFAULT_ENDPOINT.to_string(),
    }
}

/// A Hugging Face access token. Never printed: `{:?}` and `{}` show `hf_***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token, trimming the whitespace a token file or a paste may carry.
    /// `None` when nothing is left.
    pub fn new(raw: &str) -> Option<Self> {
        let t = raw.trim();
        (!t.is_empty()).then(|| Self(t.to_string()))
    }

    /// The secret itself, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the token replaced by a mask.
    pub(crate) fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "hf_***")
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(hf_***)")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hf_***")
    }
}

/// Where a token was found, for messages ("the token from HF_TOKEN was rejected").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    Flag,
    Env(&'static str),
    File(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Flag => f.write_str("--token"),
            TokenSource::Env(name) => f.write_str(name),
            TokenSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The token to use: `flag` if given, else `HF_TOKEN` (or the older
/// `HUGGING_FACE_HUB_TOKEN`), else the token file. `None` when there is none.
pub(crate) fn resolve_token(flag: Option<&str>) -> Option<(Token, TokenSource)> {
    if let Some(t) = flag.and_then(Token::new) {
        return Some((t, TokenSource::Flag));
    }
    for name in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] {
        if let Some(t) = std::env::var(name).ok().as_deref().and_then(Token::new) {
            return Some((t, TokenSource::Env(name)));
        }
    }
    let path = token_file()?;
    let text = std::fs::read_to_string(&path).ok()?;
    Token::new(&text).map(|t| (t, TokenSource::File(path)))
}

/// The token file: `HF_TOKEN_PATH`, else `$HF_HOME/token`, where `HF_HOME` defaults to
/// `$XDG_CACHE_HOME/huggingface`, then `~/.cache/huggingface` (as huggingface_hub).
pub(crate) fn token_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_TOKEN_PATH") {
        return Some(PathBuf::from(p));
    }
    Some(hf_home()?.join("token"))
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub(crate) fn hf_home() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(p).join("huggingface"));
    }
    Some(dirs::home_dir()?.join(".cache").join("huggingface"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_print() {
        let t = Token::new("  hf_abcdefSECRET\n").unwrap();
        assert_eq!(t.expose(), "hf_abcdefSECRET");
        assert!(!format!("{t:?} {t}").contains("SECRET"));
        assert_eq!(
            t.redact("bad header Bearer hf_abcdefSECRET!"),
            "bad header Bearer hf_***!"
        );
        assert!(Token::new(" \n").is_none());
    }
}
