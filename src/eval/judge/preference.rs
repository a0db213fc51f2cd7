//! The judge's verdict from its answer (an OpenAI chat-completion choice).
//!
//! Like AlpacaEval 2's weighted annotator, the preference is read from the
//! log-probabilities of the two identifier tokens at the first position:
//! p(A) = P(A) / (P(A) + P(B)), an identifier missing from `top_logprobs` having
//! probability 0. Tokens are compared after trimming whitespace (`" A"` counts as
//! `A`), and the alternatives that spell one identifier are summed. A judge that gives
//! no log-probabilities, or none for either identifier, is read from its answer text:
//! the first word being an identifier gives 1 or 0. Anything else has no verdict.
//!
//! ```
//! # use ckpt::eval::judge::preference::{read_verdict, Source};
//! let choice = serde_json::json!({"message": {"content": "A"}, "logprobs": {"content": [
//!     {"token": "A", "logprob": -0.2, "top_logprobs": [
//!         {"token": "A", "logprob": -0.2}, {"token": "B", "logprob": -1.8}]}]}});
//! let v = read_verdict(&choice, ["A", "B"]).unwrap();
//! assert_eq!(v.source, Source::Logprobs);
//! assert!((v.p_first - 1.0 / (1.0 + (-1.6f64).exp())).abs() < 1e-12);
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a verdict was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Logprobs,
    Answer,
}

/// The judge's verdict on one pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Probability that the answer shown first is the better one.
    pub p_first: f64,
    pub source: Source,
}

/// The verdict in `choice` (`{"message": {"content"}, "logprobs": {"content": [...]}}`)
/// on identifiers `[first, second]`; `None` when the answer names neither.
pub fn read_verdict(choice: &Value, ids: [&str; 2]) -> Option<Verdict> {
    from_logprobs(choice, ids).or_else(|| from_answer(choice, ids))
}

fn from_logprobs(choice: &Value, ids: [&str; 2]) -> Option<Verdict> {
    let first = choice.pointer("/logprobs/content/0")?;
    // The sampled token may be missing from `top_logprobs` (top_logprobs: 0).
    let mut seen: Vec<(&str, f64)> = Vec::new();
    let candidates = first
        .get("top_logprobs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(std::iter::once(first));
    for entry in candidates {
        let (Some(token), Some(lp)) = (
            entry.get("token").and_then(Value::as_str),
            entry.get("logprob").and_then(Value::as_f64),
        ) else {
            continue;
        };
        if !seen.iter().any(|(t, _)| *t == token) {
            seen.push((token, lp));
        }
    }
    let mass = |id: &str| {
        let lps: Vec<f64> = seen
            .iter()
            .filter(|(t, _)| t.trim() == id)
            .map(|(_, lp)| *lp)
            .collect();
        logsumexp(&lps)
    };
    let (a, b) = (mass(ids[0]), mass(ids[1]));
    if a == f64::NEG_INFINITY && b == f64::NEG_INFINITY {
        return None;
    }
    // p(A) = e^a / (e^a + e^b), computed without overflow.
    let p_first = 1.0 / (1.0 + (b - a).exp());
    Some(Verdict {
        p_first,
        source: Source::Logprobs,
    })
}

fn from_answer(choice: &Value, ids: [&str; 2]) -> Option<Verdict> {
    let content = choice.pointer("/message/content").and_then(Value::as_str)?;
    let word: String = content
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect();
    let p_first = if word == ids[0] {
        1.0
    } else if word == ids[1] {
        0.0
    } else {
        return None;
    };
    Some(Verdict {
        p_first,
        source: Source::Answer,
    })
}

fn logsumexp(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn choice(content: &str, top: Value) -> Value {
        json!({"message": {"role": "assistant", "content": content},
               "logprobs": {"content": [{"token": content, "logprob": -0.1, "top_logprobs": top}]}})
    }

    #[test]
    fn probabilities_from_the_identifier_tokens() {
        let c = choice(
            "B",
            json!([{"token": "B", "logprob": -0.1}, {"token": "A", "logprob": -2.5},
                   {"token": "The", "logprob": -3.0}]),
        );
        let v = read_verdict(&c, ["A", "B"]).unwrap();
        let expect = (-2.5f64).exp() / ((-2.5f64).exp() + (-0.1f64).exp());
        assert!((v.p_first - expect).abs() < 1e-12, "{v:?}");
        assert_eq!(v.source, Source::Logprobs);
        // Spellings of one identifier add up; exact duplicates count once.
        let c = choice(
            "A",
            json!([{"token": "A", "logprob": -1.0}, {"token": " A", "logprob": -1.0},
                   {"token": "A", "logprob": -1.0}, {"token": "B", "logprob": -1.0}]),
        );
        let v = read_verdict(&c, ["A", "B"]).unwrap();
        assert!((v.p_first - 2.0 / 3.0).abs() < 1e-12, "{v:?}");
    }

    #[test]
    fn one_identifier_missing_is_probability_zero() {
        let c = choice(
            "A",
            json!([{"token": "A", "logprob": -0.01}, {"token": "x", "logprob": -5.0}]),
        );
        assert_eq!(read_verdict(&c, ["A", "B"]).unwrap().p_first, 1.0);
        let c = choice(
            "z",
            json!([{"token": "z", "logprob": -0.01}, {"token": "B", "logprob": -9.0}]),
        );
        assert_eq!(read_verdict(&c, ["A", "B"]).unwrap().p_first, 0.0);
    }

    #[test]
    fn without_logprobs_the_answer_decides() {
        let plain =
            |s: &str| json!({"message": {"role": "assistant", "content": s}, "logprobs": null});
        let v = read_verdict(&plain("B"), ["A", "B"]).unwrap();
        assert_eq!((v.p_first, v.source), (0.0, Source::Answer));
        assert_eq!(
            read_verdict(&plain(" **A**."), ["A", "B"]).unwrap().p_first,
            1.0
        );
        assert_eq!(read_verdict(&plain("Answer A"), ["A", "B"]), None);
        assert_eq!(read_verdict(&plain(""), ["A", "B"]), None);
        assert_eq!(read_verdict(&json!({}), ["A", "B"]), None);
        // Log-probabilities naming neither identifier fall back to the text too.
        let c = json!({"message": {"content": "B."}, "logprobs": {"content": [
            {"token": "B.", "logprob": -0.1, "top_logprobs": [{"token": "B.", "logprob": -0.1}]}]}});
        assert_eq!(read_verdict(&c, ["A", "B"]).unwrap().source, Source::Answer);
    }
}
