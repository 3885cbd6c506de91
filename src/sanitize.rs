//! Registry-supplied text on its way to a terminal, a log or a report.
//!
//! Error bodies, platform strings, tag names and token-service messages come from servers
//! nobody here controls. Printed raw, an escape sequence can rewrite the operator's terminal
//! and a newline can forge a log line; an unbounded body can fill a report with megabytes.
//! Everything a registry said passes through [`text`] before it is shown anywhere.

/// How much registry text a message keeps by default (characters).
pub const MAX_TEXT: usize = 512;

/// `s` with every control character (C0, DEL, C1 — escape sequences, CR/LF, tabs included)
/// replaced by a visible `\u{…}`-style escape, cut to at most `max` characters, with a marker
/// saying it was cut.
pub fn text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 16);
    for (kept, c) in s.chars().enumerate() {
        if kept >= max {
            out.push_str("…[truncated]");
            return out;
        }
        if c.is_control() || is_bidi_control(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`text`] with the default length, [`MAX_TEXT`].
pub fn short(s: &str) -> String {
    text(s, MAX_TEXT)
}

/// Unicode's bidirectional overrides and isolates: invisible, and able to make a line read
/// differently from what it holds ("Trojan Source").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_newlines_are_made_visible() {
        let s = text("linux/amd64\u{1b}[2J\r\nINFO forged line\u{7}", 100);
        assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
        assert!(s.starts_with("linux/amd64\\u{1b}[2J\\u{d}\\u{a}INFO forged line"), "{s}");
    }

    #[test]
    fn long_text_is_cut_and_says_so() {
        let s = text(&"x".repeat(10_000), 10);
        assert_eq!(s, format!("{}…[truncated]", "x".repeat(10)));
        assert_eq!(text("short", 10), "short");
    }

    #[test]
    fn bidi_overrides_are_escaped() {
        assert_eq!(text("a\u{202E}b", 10), "a\\u{202e}b");
    }
}
