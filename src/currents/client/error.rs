//! The error type of the Currents client.

use std::time::Duration;

/// Longest excerpt of a response body or message kept in an error.
pub(crate) const MAX_DETAIL_CHARS: usize = 200;

/// Everything that can go wrong calling the Currents REST API.
///
/// `Display` never contains the API key: messages echoed by the server are redacted
/// before they are stored here, and request headers are never included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrentsError {
    /// The API answered with a non-success HTTP status (or a `"status":"FAILED"` envelope).
    /// `message` is the envelope's `error`, or a short excerpt of a non-JSON body.
    /// For 429 and 5xx this is what is left after the retries ran out.
    #[error("Currents API error (HTTP {status}): {message}")]
    Api { status: u16, message: String },

    /// Still rate limited (HTTP 429) after the last attempt.
    #[error("Currents API rate limit: still HTTP 429 after {attempts} attempt(s){}",
        retry_after.map(|d| format!(" (server asked to wait {}s)", d.as_secs_f64())).unwrap_or_default())]
    RateLimited {
        attempts: u32,
        /// The last `Retry-After` the server sent, if any (uncapped).
        retry_after: Option<Duration>,
    },

    /// No complete response within `request_timeout` (after the last attempt).
    #[error("Currents API request timed out")]
    Timeout,

    /// Connection refused/reset/dropped, TLS failure, DNS failure, ...
    #[error("Currents API transport error: {0}")]
    Transport(String),

    /// A response that could not be decoded: malformed JSON, an HTML page, a missing
    /// `data` field, an oversized body. `detail` holds at most ~200 characters.
    #[error("Currents API returned an undecodable response (HTTP {status}): {detail}")]
    Decode { status: u16, detail: String },

    /// Cursor pagination misbehaved (a repeated cursor, a page without cursors while
    /// `has_more` is true, or the page cap reached).
    #[error("Currents API pagination error: {0}")]
    Pagination(String),

    /// An argument the client refuses to send (an empty id, `.` or `..`).
    #[error("invalid argument for the Currents API: {0}")]
    InvalidArgument(String),

    /// The client could not be built (bad base URL, TLS backend failure).
    #[error("invalid Currents client configuration: {0}")]
    Config(String),
}

impl CurrentsError {
    /// Whether trying the same call again later may succeed: timeouts, transport errors,
    /// HTTP 429 and 5xx. Other 4xx, decode errors and argument errors are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, .. } => is_retryable_status(*status),
            Self::RateLimited { .. } | Self::Timeout | Self::Transport(_) => true,
            Self::Decode { .. }
            | Self::Pagination(_)
            | Self::InvalidArgument(_)
            | Self::Config(_) => false,
        }
    }

    /// The HTTP status the error came with, if a response was received.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// How long the server asked to wait before trying again: the last `Retry-After` of
    /// a call still rate limited after its last attempt (uncapped).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// HTTP 404 from the API.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// A short label for metrics: the HTTP status, or `timeout`, `transport`, ...
    pub fn label(&self) -> String {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => status.to_string(),
            Self::RateLimited { .. } => "429".into(),
            Self::Timeout => "timeout".into(),
            Self::Transport(_) => "transport".into(),
            Self::Pagination(_) => "pagination".into(),
            Self::InvalidArgument(_) => "invalid_argument".into(),
            Self::Config(_) => "config".into(),
        }
    }
}

/// 429 and 5xx are worth retrying; nothing else is.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// Collapses whitespace, removes every occurrence of `secret`, and cuts the text to
/// [`MAX_DETAIL_CHARS`] characters (appending `…` when cut).
pub(crate) fn excerpt(text: &str, secret: &str) -> String {
    let redacted;
    let text = if secret.len() >= 4 && text.contains(secret) {
        redacted = text.replace(secret, "[redacted]");
        redacted.as_str()
    } else {
        text
    };
    let mut out = String::new();
    let mut count = 0;
    let mut cut = false;
    for word in text.split_whitespace() {
        if !out.is_empty() {
            if count >= MAX_DETAIL_CHARS {
                cut = true;
                break;
            }
            out.push(' ');
            count += 1;
        }
        for c in word.chars() {
            if count >= MAX_DETAIL_CHARS {
                cut = true;
                break;
            }
            // Control characters have no place in a log line.
            out.push(if c.is_control() { '?' } else { c });
            count += 1;
        }
        if cut {
            break;
        }
    }
    if cut {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(
            CurrentsError::Api {
                status: 500,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            CurrentsError::Api {
                status: 503,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            CurrentsError::Api {
                status: 429,
                message: String::new()
            }
            .is_retryable()
        );
        for s in [400, 401, 403, 404, 408, 409, 422] {
            assert!(
                !CurrentsError::Api {
                    status: s,
                    message: String::new()
                }
                .is_retryable(),
                "{s}"
            );
        }
        assert!(CurrentsError::Timeout.is_retryable());
        assert!(CurrentsError::Transport("reset".into()).is_retryable());
        assert!(
            CurrentsError::RateLimited {
                attempts: 5,
                retry_after: None
            }
            .is_retryable()
        );
        assert!(
            !CurrentsError::Decode {
                status: 200,
                detail: String::new()
            }
            .is_retryable()
        );
        assert!(!CurrentsError::InvalidArgument("x".into()).is_retryable());
        assert!(
            CurrentsError::Api {
                status: 404,
                message: String::new()
            }
            .is_not_found()
        );
        assert_eq!(CurrentsError::Timeout.label(), "timeout");
    }

    #[test]
    fn excerpt_cuts_collapses_and_redacts() {
        let long = "x".repeat(1000);
        let e = excerpt(&long, "");
        assert_eq!(e.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(e.ends_with('…'));
        assert_eq!(
            excerpt("<html>\n  <body>\tBad   Gateway</body>", ""),
            "<html> <body> Bad Gateway</body>"
        );
        assert_eq!(
            excerpt("bad key sk-123456 given", "sk-123456"),
            "bad key [redacted] given"
        );
        assert_eq!(
            excerpt("short", "s"),
            "short",
            "too-short secrets are not redacted"
        );
    }

    #[test]
    fn display_of_rate_limited() {
        let e = CurrentsError::RateLimited {
            attempts: 3,
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            e.to_string(),
            "Currents API rate limit: still HTTP 429 after 3 attempt(s) (server asked to wait 2s)"
        );
    }
}
