//! A redacting wrapper for secrets: never shown in `Debug`, `Display`, logs or errors.

use std::fmt;

/// A secret string (API key, token, webhook secret). `Debug` and `Display` print
/// `[redacted]`; the value is reachable only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Call sites are the few places that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from the environment; empty values count as unset.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(Self)
    }

    /// Reads a comma-separated list of secrets (for rotation) from the environment.
    pub fn list_from_env(var: &str) -> Vec<Self> {
        std::env::var(var)
            .ok()
            .map(|v| Self::split_list(&v))
            .unwrap_or_default()
    }

    /// Splits a comma-separated list of secrets, dropping empty entries.
    pub fn split_list(raw: &str) -> Vec<Self> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Self(s.to_string()))
            .collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn lists_split_on_commas() {
        let l = Secret::split_list(" a, ,b ");
        assert_eq!(l.iter().map(|s| s.expose()).collect::<Vec<_>>(), ["a", "b"]);
    }
}
