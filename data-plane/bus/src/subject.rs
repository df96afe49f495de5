//! NATS subject rules: validation of subjects and queue group names, and wildcard matching.
//!
//! Both bus implementations validate with these functions before doing anything, so a bad subject
//! gives the same [`SubjectError`] whether the bus is in-process or NATS. The rules follow the NATS
//! protocol: tokens are separated by `.` and may not be empty; `*` as a whole token matches exactly
//! one token, `>` as the last token matches one or more; `*`/`>` inside a longer token are literal
//! characters. Whitespace would break NATS protocol framing, so it is rejected everywhere, and so are
//! control characters. Publishing to a wildcard subject is rejected: NATS would deliver it literally
//! to matching wildcard subscribers, which is never what a caller means.

/// Why a subject or queue group name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("it is empty")]
    Empty,
    #[error("it has an empty token (a leading, trailing or doubled '.')")]
    EmptyToken,
    #[error("it contains whitespace or a control character")]
    Whitespace,
    #[error("it contains a wildcard token ('*' or '>'), which only subscriptions may use")]
    WildcardInPublish,
    #[error("'>' may only be the last token")]
    FullWildcardNotLast,
}

/// Checks a subject to publish to (or to reply to): concrete, no wildcards.
pub(crate) fn validate_publish(subject: &str) -> Result<(), SubjectError> {
    check_characters(subject)?;
    // One pass over the tokens (this runs twice per message): an empty token is reported before a
    // wildcard one, wherever each is.
    let mut wildcard = false;
    for token in split(subject) {
        match token {
            b"" => return Err(SubjectError::EmptyToken),
            b"*" | b">" => wildcard = true,
            _ => {}
        }
    }
    if wildcard {
        return Err(SubjectError::WildcardInPublish);
    }
    Ok(())
}

/// Checks a subscription subject: `*` anywhere as a whole token, `>` only as the last token.
pub(crate) fn validate_subscribe(subject: &str) -> Result<(), SubjectError> {
    check_characters(subject)?;
    let mut full_wildcard_not_last = false;
    let mut tokens = split(subject).peekable();
    while let Some(token) = tokens.next() {
        match token {
            b"" => return Err(SubjectError::EmptyToken),
            b">" if tokens.peek().is_some() => full_wildcard_not_last = true,
            _ => {}
        }
    }
    if full_wildcard_not_last {
        return Err(SubjectError::FullWildcardNotLast);
    }
    Ok(())
}

/// Checks a queue group name: one non-empty word without whitespace (NATS allows dots in it).
pub(crate) fn validate_queue_group(name: &str) -> Result<(), SubjectError> {
    if name.is_empty() {
        return Err(SubjectError::Empty);
    }
    if name.chars().any(is_forbidden) {
        return Err(SubjectError::Whitespace);
    }
    Ok(())
}

/// True when a validated subscription subject has no wildcard token, so it can be looked up exactly.
pub(crate) fn is_literal(pattern: &str) -> bool {
    !split(pattern).any(|token| token == b"*" || token == b">")
}

/// Does a validated subscription `pattern` match a validated publish `subject`?
pub(crate) fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = split(subject);
    for pattern_token in split(pattern) {
        if pattern_token == b">" {
            // `>` needs at least one more token.
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(token) if pattern_token == b"*" || pattern_token == token => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// How many tokens a validated subscription pattern can match: exactly its own count, or at least
/// that many when it ends in `>`. Checking a subject's count first spares comparing tokens with
/// patterns that cannot match (most of them, for most subjects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    tokens: usize,
    open: bool,
}

impl Shape {
    pub(crate) fn of(pattern: &str) -> Shape {
        Shape {
            tokens: token_count(pattern),
            open: pattern == ">" || pattern.ends_with(".>"),
        }
    }

    /// Whether a subject of `tokens` tokens may match.
    pub(crate) fn admits(self, tokens: usize) -> bool {
        if self.open {
            tokens >= self.tokens
        } else {
            tokens == self.tokens
        }
    }
}

/// The number of tokens of a validated subject or pattern.
pub(crate) fn token_count(subject: &str) -> usize {
    subject.bytes().filter(|&b| b == b'.').count() + 1
}

/// A subject's tokens, as bytes: every publish is matched against each wildcard subscription,
/// and splitting bytes on `.` is several times cheaper than `str::split`'s char searcher.
fn split(subject: &str) -> std::slice::Split<'_, u8, impl FnMut(&u8) -> bool> {
    subject.as_bytes().split(|&b| b == b'.')
}

/// The checks both kinds of subject share, before looking at tokens.
fn check_characters(subject: &str) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    // Printable ASCII (the usual subject) needs no look at each char.
    if !subject.bytes().all(|b| b.is_ascii_graphic()) && subject.chars().any(is_forbidden) {
        return Err(SubjectError::Whitespace);
    }
    Ok(())
}

fn is_forbidden(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_subjects() {
        for ok in [
            "a",
            "a.b.c",
            "kaa.v1.service.epmx.esp.ClientData",
            "a*b.c>",
            "_INBOX.x1",
        ] {
            assert_eq!(validate_publish(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("", SubjectError::Empty),
            (".a", SubjectError::EmptyToken),
            ("a.", SubjectError::EmptyToken),
            ("a..b", SubjectError::EmptyToken),
            (".", SubjectError::EmptyToken),
            ("a b", SubjectError::Whitespace),
            ("a\tb", SubjectError::Whitespace),
            ("a\r\nb", SubjectError::Whitespace),
            ("a\0b", SubjectError::Whitespace),
            ("a.*", SubjectError::WildcardInPublish),
            ("a.>", SubjectError::WildcardInPublish),
            (">", SubjectError::WildcardInPublish),
            // An empty token is reported whether it comes before or after a wildcard.
            ("*..a", SubjectError::EmptyToken),
            ("a..*", SubjectError::EmptyToken),
        ];
        for (subject, want) in cases {
            assert_eq!(validate_publish(subject), Err(want), "{subject:?}");
        }
    }

    #[test]
    fn subscribe_subjects() {
        for ok in ["a", ">", "*", "a.*.c", "a.>", "*.*.>", "a*.b>"] {
            assert_eq!(validate_subscribe(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            validate_subscribe("a.>.c"),
            Err(SubjectError::FullWildcardNotLast)
        );
        assert_eq!(validate_subscribe(">.a"), Err(SubjectError::FullWildcardNotLast));
        assert_eq!(validate_subscribe("a..*"), Err(SubjectError::EmptyToken));
        assert_eq!(validate_subscribe(">.a."), Err(SubjectError::EmptyToken));
        assert_eq!(validate_subscribe("a *"), Err(SubjectError::Whitespace));
        assert_eq!(validate_subscribe(""), Err(SubjectError::Empty));
    }

    #[test]
    fn queue_groups() {
        assert_eq!(validate_queue_group("epmx"), Ok(()));
        assert_eq!(validate_queue_group("a.b"), Ok(()));
        assert_eq!(validate_queue_group(""), Err(SubjectError::Empty));
        assert_eq!(validate_queue_group("a b"), Err(SubjectError::Whitespace));
    }

    #[test]
    fn wildcard_matching() {
        let cases = [
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.b", "a.b.c", false),
            ("a.b.c", "a.b", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("*.b", "a.b", true),
            ("a.*.c", "a.x.c", true),
            ("a.*.c", "a.x.y.c", false),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c.d", true),
            ("a.>", "a", false),
            ("a.>", "b.a", false),
            (">", "a", true),
            (">", "a.b.c", true),
            ("*.>", "a", false),
            ("*.>", "a.b", true),
            // Wildcard characters inside a longer token are literal.
            ("a*", "ab", false),
            ("a*", "a*", true),
        ];
        for (pattern, subject, want) in cases {
            assert_eq!(matches(pattern, subject), want, "{pattern} vs {subject}");
            // The count check never turns away a subject that matches.
            if want {
                assert!(
                    Shape::of(pattern).admits(token_count(subject)),
                    "{pattern} vs {subject}"
                );
            }
        }
        assert!(!Shape::of("a.*").admits(3));
        assert!(!Shape::of("a.>").admits(1));
        assert!(Shape::of("a.>").admits(5));
    }

    #[test]
    fn literal_detection() {
        assert!(is_literal("a.b"));
        assert!(is_literal("a*.b>"));
        assert!(!is_literal("a.*"));
        assert!(!is_literal(">"));
    }
}
