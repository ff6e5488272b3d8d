//! `Config::parse` on arbitrary text: it never panics, and every error is one
//! line (no control characters) naming the file, a line and column inside
//! the text, and a key.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use unitwatch::config::{Config, Error};

const PATH: &str = "/etc/unitwatch/config.toml";

fuzz_target!(|data: &[u8]| {
    // `Config::load` reads the file with `read_to_string`: only UTF-8 gets here.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let e = match Config::parse(Path::new(PATH), text) {
        Ok(config) => {
            assert!(config.max_units >= 1);
            assert!(!config.state_dir.as_os_str().is_empty());
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
            let Some(line_text) = text.split('\n').nth(line.wrapping_sub(1)) else {
                panic!("line {line} is not in the text: {shown:?}");
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
