//! Words as systemd reads them in command lines and `Environment=` values: splitting (quotes,
//! C escapes) and the expansion of `$VAR` and `${VAR}` at exec time.

/// Splits a command line or an `Environment=` value into words the way systemd does:
/// blanks separate words, single and double quotes group, and C escapes are decoded.
pub fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => {
                in_word = true;
                match chars.next() {
                    Some('n') => cur.push('\n'),
                    Some('t') => cur.push('\t'),
                    Some(o) => cur.push(o),
                    None => {}
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Expands `${VAR}` and `$VAR` in one argv the way systemd does at exec time: `${VAR}` stays one
/// word, an unbraced `$VAR` that is a whole word splits on blanks. Unknown variables expand to
/// nothing.
pub fn expand_argv(argv: &[String], lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    for w in argv {
        if let Some(name) = w.strip_prefix('$')
            && !name.starts_with('{')
            && super::envfile::valid_name(name)
        {
            out.extend(
                lookup(name)
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string),
            );
            continue;
        }
        out.push(expand_braced(w, lookup));
    }
    out
}

fn expand_braced(w: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(w.len());
    let mut rest = w;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) if super::envfile::valid_name(&after[..j]) => {
                out.push_str(&lookup(&after[..j]).unwrap_or_default());
                rest = &after[j + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn braced_and_bare_variables_expand() {
        let env = |k: &str| match k {
            "PID" => Some("/run/a/g.pid".to_string()),
            "OPTS" => Some("-w 2 --x".to_string()),
            _ => None,
        };
        let argv: Vec<String> = ["g", "--pid", "${PID}", "$OPTS", "x${NOPE}y", "${"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            expand_argv(&argv, &env),
            vec!["g", "--pid", "/run/a/g.pid", "-w", "2", "--x", "xy", "${"]
        );
    }

    proptest! {
        #[test]
        fn plain_words_split_on_blanks(words in proptest::collection::vec("[a-zA-Z0-9/._=-]{1,12}", 0..8)) {
            prop_assert_eq!(split_words(&words.join("  ")), words);
        }
    }
}
