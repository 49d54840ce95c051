//! The configuration reference, read from the documented
//! `config.example.toml`: each key's comment is its documentation. build.rs
//! makes the man page's CONFIGURATION section from it, and tests/dist.rs
//! checks the README's reference against `markdown`, so neither can drift
//! from the file the .deb installs. Pure: it is given the text.

/// A section of the config: the top level, or `[name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// None for the top level.
    pub name: Option<String>,
    /// The comment above its header.
    pub about: String,
    pub keys: Vec<Key>,
}

/// One key, as the example gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    /// The value the example shows (the default, or an example of an optional key).
    pub value: String,
    /// Commented out in the example: off unless set.
    pub optional: bool,
    /// The comment above it.
    pub about: String,
}

/// The sections of `text`, in its order; an error names a line that is
/// neither a comment, a key, a section nor blank.
pub fn parse(text: &str) -> Result<Vec<Section>, String> {
    let mut sections = vec![Section {
        name: None,
        about: String::new(),
        keys: Vec::new(),
    }];
    let mut comment: Vec<&str> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            comment.clear();
            continue;
        }
        let (optional, body) = match line.strip_prefix("# ") {
            Some(body) => (true, body),
            None => (false, line),
        };
        if let Some(name) = section_name(body) {
            sections.push(Section {
                name: Some(name.to_owned()),
                about: comment.join(" "),
                keys: Vec::new(),
            });
            comment.clear();
        } else if let Some((name, value)) = key(body) {
            let about = comment.join(" ");
            let section = sections.last_mut().expect("the top level is there");
            section.keys.push(Key {
                name: name.to_owned(),
                value: value.to_owned(),
                optional,
                about,
            });
            comment.clear();
        } else if optional || line == "#" {
            comment.push(body.trim_start_matches('#'));
        } else {
            return Err(format!(
                "line {}: neither a comment, a key nor a section: {line}",
                index + 1
            ));
        }
    }
    Ok(sections)
}

/// `[name]`, for a section header.
fn section_name(body: &str) -> Option<&str> {
    let name = body.strip_prefix('[')?.strip_suffix(']')?;
    is_name(name).then_some(name)
}

/// `name = value`, for a key. (So a comment must not start a line with
/// one: tests/dist.rs finds a key the config does not take.)
fn key(body: &str) -> Option<(&str, &str)> {
    let (name, value) = body.split_once(" = ")?;
    is_name(name).then_some((name, value))
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Every key as `section.key` (`source`, `fetch.max_bytes`), but the
/// services, which are the owner's own names.
pub fn keys(sections: &[Section]) -> Vec<String> {
    sections
        .iter()
        .filter(|section| section.name.as_deref() != Some("services"))
        .flat_map(|section| {
            section.keys.iter().map(move |key| match &section.name {
                Some(name) => format!("{name}.{}", key.name),
                None => key.name.clone(),
            })
        })
        .collect()
}

/// The reference as the README shows it: a heading per section, then
/// each key with its value and what it does.
pub fn markdown(sections: &[Section]) -> String {
    let mut text = String::new();
    for section in sections {
        let heading = match &section.name {
            None => "Top level".to_owned(),
            Some(name) => format!("`[{name}]`"),
        };
        text.push_str(&format!("#### {heading}\n\n"));
        if !section.about.is_empty() {
            text.push_str(&format!("{}\n\n", section.about));
        }
        if section.name.as_deref() == Some("services") {
            let examples: Vec<String> = section
                .keys
                .iter()
                .map(|key| format!("`{} = {}`", key.name, key.value))
                .collect();
            text.push_str(&format!("For example: {}.\n\n", examples.join(", ")));
            continue;
        }
        for key in &section.keys {
            let value = match key.optional {
                true => format!("optional, e.g. `{}`", key.value),
                false => format!("`{}`", key.value),
            };
            text.push_str(&format!("- **`{}`** ({value}): {}\n", key.name, key.about));
        }
        text.push('\n');
    }
    text.trim_end().to_owned() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# intro\n\n# Where from.\nsource = \"-\"\n# Optional page.\n\
                        # status_file = \"/x\"\n\n[fetch]\n# Seconds.\ntimeout_secs = 20\n\n\
                        # A key section.\n# [signature]\n# The key.\n# public_key = \"RW\"\n\n\
                        # Names.\n[services]\nssh = 22\n# web = 80\n";

    #[test]
    fn keys_sections_and_their_comments_are_read() {
        let sections = parse(TEXT).unwrap();
        assert_eq!(
            keys(&sections),
            [
                "source",
                "status_file",
                "fetch.timeout_secs",
                "signature.public_key"
            ]
        );
        assert_eq!(sections[0].keys[1].about, "Optional page.");
        assert!(sections[0].keys[1].optional && !sections[0].keys[0].optional);
        assert_eq!(sections[2].about, "A key section.");
        assert_eq!(sections[3].keys.len(), 2);
        let text = markdown(&sections);
        assert!(
            text.contains("- **`status_file`** (optional, e.g. `\"/x\"`): Optional page.\n"),
            "{text}"
        );
        assert!(
            text.contains("#### `[services]`\n\nNames.\n\nFor example: `ssh = 22`, `web = 80`.\n"),
            "{text}"
        );
        assert!(parse("what\n").unwrap_err().starts_with("line 1:"));
    }
}
