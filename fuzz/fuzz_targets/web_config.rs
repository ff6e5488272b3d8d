//! `WebConfigFile::parse` (the web configuration checked, the files it names
//! not read) on arbitrary text: it never panics, and every error is one line
//! (no control characters) naming the file, a line and column inside the
//! text, and a key. Lines are counted as YAML counts them (`\r\n`, `\r`,
//! `\n`, NEL, LS and PS each end one).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use unitwatch::config::Error;
use unitwatch::http::web_config::WebConfigFile;

const PATH: &str = "/etc/unitwatch/web.yml";

/// The lines of `text` as YAML counts them.
fn yaml_lines(text: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines.push(String::new());
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => lines.push(String::new()),
            c => {
                if let Some(last) = lines.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    lines
}

fuzz_target!(|data: &[u8]| {
    // `WebConfigFile::read` reads the file with `read_to_string`: only UTF-8 gets here.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let e = match WebConfigFile::parse(Path::new(PATH), text) {
        Ok(file) => {
            // Relative paths are taken from the file's directory.
            if let Some(cert) = file.cert_file() {
                assert!(cert.is_absolute(), "{}", cert.display());
            }
            return;
        }
        Err(e) => e,
    };
    let shown = e.to_string();
    assert!(
        !shown.chars().any(char::is_control),
        "error not on one line: {shown:?}"
    );
    match e {
        Error::Invalid {
            path,
            line,
            column,
            key,
            ..
        } => {
            assert_eq!(path, PATH);
            assert!(!key.trim().is_empty(), "no key in {shown:?}");
            let lines = yaml_lines(text);
            let Some(line_text) = lines.get(line.wrapping_sub(1)) else {
                panic!(
                    "line {line} is not in the text ({} lines): {shown:?}",
                    lines.len()
                );
            };
            let columns = line_text.chars().count() + 1;
            assert!(
                (1..=columns).contains(&column),
                "column {column} of {columns}: {shown:?}"
            );
            assert!(shown.starts_with(&format!("{PATH}:{line}:{column}: {key}: ")));
        }
        Error::Read { .. } => panic!("parse cannot fail to read: {shown}"),
    }
});
