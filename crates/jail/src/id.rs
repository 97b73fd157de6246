//! Jail ids: the one name that reaches the jailer, the chroot path and the cgroup path.
//!
//! The jailer accepts any Unicode alphanumeric plus `-`; we are stricter (ASCII letters, digits
//! and `-`, 1..=64 characters, not starting with `-`, which the jailer would take for an option) so that an id is always a safe single path component and a safe
//! name for cgroups, netns files and logs.

use std::fmt;

/// Longest id the jailer accepts.
pub const MAX_LEN: usize = 64;

/// A validated jail id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct JailId(String);

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("is empty; use 1 to 64 ASCII letters, digits or '-'")]
    Empty,
    /// The id is longer than [`MAX_LEN`].
    #[error("is {len} characters long; use at most 64 ASCII letters, digits or '-'")]
    TooLong {
        /// Its length in characters.
        len: usize,
    },
    /// The id starts with `-`, which the jailer would read as an option (`--id --`).
    #[error(
        "starts with '-', which the jailer would read as an option; start with a letter or digit"
    )]
    LeadingDash,
    /// The id holds a character outside `[A-Za-z0-9-]`.
    #[error(
        "contains {ch:?}; use only ASCII letters, digits or '-' (no '/', '.', spaces or non-ASCII)"
    )]
    BadChar {
        /// The first offending character.
        ch: char,
    },
}

impl JailId {
    /// Validates `s` as an id.
    pub fn new(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if let Some(ch) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(IdError::BadChar { ch });
        }
        let len = s.chars().count();
        if len > MAX_LEN {
            return Err(IdError::TooLong { len });
        }
        if s.starts_with('-') {
            return Err(IdError::LeadingDash);
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_letters_digits_and_dashes_up_to_64() {
        assert!(JailId::new("a").is_ok());
        assert!(JailId::new("my-agent-task-123").is_ok());
        assert!(JailId::new(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_path_characters_non_ascii_and_length() {
        assert_eq!(JailId::new(""), Err(IdError::Empty));
        assert_eq!(JailId::new("a/b"), Err(IdError::BadChar { ch: '/' }));
        assert_eq!(JailId::new(".."), Err(IdError::BadChar { ch: '.' }));
        assert_eq!(JailId::new("vm_1"), Err(IdError::BadChar { ch: '_' }));
        assert_eq!(JailId::new("vmé"), Err(IdError::BadChar { ch: 'é' }));
        assert_eq!(JailId::new("vm 1"), Err(IdError::BadChar { ch: ' ' }));
        assert_eq!(JailId::new("--"), Err(IdError::LeadingDash));
        assert_eq!(JailId::new("-rf"), Err(IdError::LeadingDash));
        assert_eq!(
            JailId::new(&"x".repeat(65)),
            Err(IdError::TooLong { len: 65 })
        );
    }
}
