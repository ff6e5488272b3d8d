//! The files unitwatch ships, as tests read them: the Debian package
//! `cargo deb` built and the Grafana dashboard's queries.

use std::path::PathBuf;

use serde_json::Value;

/// The project's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The newest package in `target/debian` (scripts/test builds it before the tests).
pub fn package() -> PathBuf {
    let dir = root().join("target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                .collect()
        })
        .unwrap_or_default();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no package in {}: build it with `cargo deb` (scripts/test does)",
            dir.display()
        )
    })
}

/// The "Service uptime" dashboard.
pub fn dashboard() -> Value {
    let path = root().join("packaging/grafana/dashboards/service-uptime.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Calls `f(key, value)` for every member of every object, depth first.
pub fn visit(value: &Value, f: &mut dyn FnMut(&str, &Value)) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                f(k, v);
                visit(v, f);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| visit(v, f)),
        _ => {}
    }
}

/// The dashboard's queries with Grafana's variables filled in (`.*` for
/// template variables, `5m` for intervals): every target's `expr`, and the
/// selector of each `label_values(...)` variable.
pub fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let mut names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    // Longest first, so that `$unit` never eats the start of `$units`.
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let fill = |q: &str| {
        let mut q = q.to_owned();
        for builtin in ["$__rate_interval", "$__interval", "$__range"] {
            q = q.replace(builtin, "5m");
        }
        for n in &names {
            q = q
                .replace(&format!("${{{n}}}"), ".*")
                .replace(&format!("${n}"), ".*");
        }
        assert!(
            !q.contains('$'),
            "a Grafana variable this test does not know in `{q}`"
        );
        q
    };
    let mut queries = Vec::new();
    visit(dashboard, &mut |key, value| {
        if key == "expr" {
            let expr = value.as_str().expect("\"expr\" is a string");
            assert!(!expr.trim().is_empty(), "an empty \"expr\"");
            queries.push(fill(expr));
        }
    });
    for v in vars {
        if let Some(args) = v["definition"]
            .as_str()
            .and_then(|d| d.strip_prefix("label_values("))
        {
            let (selector, _label) = args
                .rsplit_once(',')
                .expect("label_values(selector, label)");
            queries.push(fill(selector.trim()));
        }
    }
    queries
}
