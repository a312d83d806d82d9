//! Name patterns for rules: `*` matches any run of characters (also none), `?` exactly one;
//! everything else matches itself, case-sensitively (tool names and URIs are). No character
//! classes and no escapes: tool names and resource URIs do not need them, and a pattern
//! language that small cannot surprise anyone.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("an empty pattern matches nothing: use \"*\" for everything".into());
        }
        if pattern.len() > 1024 {
            return Err("patterns are at most 1024 bytes".into());
        }
        Ok(Glob {
            pattern: pattern.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `text` matches. Linear in practice: the classic two-pointer walk with one
    /// backtrack point (the last `*`), O(pattern × text) in the worst case, no recursion.
    pub fn matches(&self, text: &str) -> bool {
        // The common shapes without allocating: a literal name, and `prefix*`.
        let wild = |c: char| c == '*' || c == '?';
        match self.pattern.find(wild) {
            None => return self.pattern == text,
            Some(at) if at + 1 == self.pattern.len() && self.pattern.ends_with('*') => {
                return text.starts_with(&self.pattern[..at]);
            }
            Some(_) => {}
        }
        let pattern: Vec<char> = self.pattern.chars().collect();
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match pattern.get(p) {
                Some('*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(&c) if c == '?' || c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|c| *c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(pattern: &str, text: &str) -> bool {
        Glob::new(pattern).unwrap().matches(text)
    }

    #[test]
    fn table() {
        let cases = [
            ("delete_*", "delete_repo", true),
            ("delete_*", "delete_", true),
            ("delete_*", "undelete_repo", false),
            ("*", "", true),
            ("*", "anything/at all", true),
            ("get_?", "get_a", true),
            ("get_?", "get_ab", false),
            ("file:///reports/*", "file:///reports/2026/q1.pdf", true),
            ("file:///reports/*", "file:///reports", false),
            ("*_admin_*", "x_admin_y", true),
            ("*_admin_*", "x_admin", false),
            ("Deploy", "deploy", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("ünï*", "ünïcode", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(m(pattern, text), expected, "{pattern} vs {text}");
        }
        assert!(Glob::new("").is_err());
    }

    proptest! {
        #[test]
        fn literal_patterns_match_only_themselves(a in "[a-z_/:.]{0,12}", b in "[a-z_/:.]{0,12}") {
            prop_assume!(!a.is_empty());
            prop_assert_eq!(m(&a, &b), a == b);
        }

        #[test]
        fn a_star_suffix_is_a_prefix_test(prefix in "[a-z_]{0,8}", text in "[a-z_]{0,12}") {
            prop_assert_eq!(m(&format!("{prefix}*"), &text), text.starts_with(&prefix));
        }

        #[test]
        fn star_matches_everything_and_never_panics(pattern in ".{1,16}", text in ".{0,32}") {
            prop_assert!(m("*", &text));
            let _ = m(&pattern, &text);
        }
    }
}
