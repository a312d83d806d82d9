//! `${VAR}` expansion in string values, done on the parsed TOML tree (not the text) so an
//! environment value can never change the structure of the file. `$${` is a literal `${`.

use super::Problem;

pub(super) fn expand(
    value: &mut toml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match value {
        toml::Value::String(s) if s.contains('$') => match expand_str(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.push(Problem::new(path, message)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand(item, &format!("{path}[{i}]"), lookup, problems);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                expand(item, &child, lookup, problems);
            }
        }
        _ => {}
    }
}

/// Expands one string. Pure, so the adversarial cases are table-tested below.
pub(super) fn expand_str(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(stripped) = after.strip_prefix("${") {
            let end = stripped
                .find('}')
                .ok_or_else(|| format!("unterminated ${{…}} in {input:?}: add the closing '}}'"))?;
            let name = &stripped[..end];
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "invalid variable name {name:?}: use letters, digits and '_'"
                ));
            }
            let value = lookup(name).ok_or_else(|| {
                format!("environment variable {name} is not set: export it or remove ${{{name}}}")
            })?;
            out.push_str(&value);
            rest = &stripped[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand_str;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("gw.example.com".into()),
            "EVIL" => Some("\"]\n[server]".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("plain", Ok("plain")),
            ("https://${HOST}/mcp", Ok("https://gw.example.com/mcp")),
            ("$${HOST}", Ok("${HOST}")),
            ("cost $5", Ok("cost $5")),
            ("${EVIL}", Ok("\"]\n[server]")),
            ("${MISSING}", Err("MISSING is not set")),
            ("${HOST", Err("unterminated")),
            ("${}", Err("invalid variable name")),
            ("${A-B}", Err("invalid variable name")),
        ];
        for (input, expected) in cases {
            let got = expand_str(input, &env);
            match (expected, &got) {
                (Ok(want), Ok(have)) => assert_eq!(want, have, "{input}"),
                (Err(fragment), Err(message)) => {
                    assert!(message.contains(fragment), "{input}: {message}")
                }
                _ => panic!("{input}: expected {expected:?}, got {got:?}"),
            }
        }
    }
}
