//! Which units are watched: glob patterns (`*`, `?`, `[...]`) over full unit
//! names, with excludes winning over includes.

use glob::Pattern;

use crate::ledger::Kind;

/// A glob pattern over unit names, checked when made (or read from the
/// configuration: a bad one is an error at its place in the file).
#[derive(Debug, Clone)]
pub struct Glob(Pattern);

impl Glob {
    /// The pattern `text`; the error says what is wrong with it.
    pub fn new(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("empty pattern".into());
        }
        Pattern::new(text)
            .map(Glob)
            .map_err(|e| format!("{} at character {}", e.msg, e.pos + 1))
    }
}

/// The include and exclude patterns of `[watch]`.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl Selector {
    /// Units matching any of `include` and none of `exclude`.
    pub fn new(include: Vec<Glob>, exclude: Vec<Glob>) -> Selector {
        Selector {
            include: include.into_iter().map(|g| g.0).collect(),
            exclude: exclude.into_iter().map(|g| g.0).collect(),
        }
    }

    /// Adds an include pattern; the error says what is wrong with it.
    pub fn include(&mut self, pattern: &str) -> Result<(), String> {
        self.include.push(Glob::new(pattern)?.0);
        Ok(())
    }

    /// Adds an exclude pattern; the error says what is wrong with it.
    pub fn exclude(&mut self, pattern: &str) -> Result<(), String> {
        self.exclude.push(Glob::new(pattern)?.0);
        Ok(())
    }

    /// Whether the unit named `unit` is watched.
    pub fn matches(&self, unit: &str) -> bool {
        self.include.iter().any(|p| p.matches(unit))
            && !self.exclude.iter().any(|p| p.matches(unit))
    }

    /// The include patterns as written, for systemd's `*ByPatterns` calls
    /// (which match with the same glob syntax).
    pub fn include_patterns(&self) -> Vec<String> {
        self.include.iter().map(|p| p.as_str().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(include: &[&str], exclude: &[&str]) -> Selector {
        let mut s = Selector::default();
        for p in include {
            s.include(p).expect("include");
        }
        for p in exclude {
            s.exclude(p).expect("exclude");
        }
        s
    }

    #[test]
    fn globs() {
        let s = selector(
            &[
                "prometheus.service",
                "aitbc-*.service",
                "worker@?.service",
                "db[12].service",
            ],
            &["aitbc-debug*.service"],
        );
        for yes in [
            "prometheus.service",
            "aitbc-coordinator-api.service",
            "aitbc-worker@3.service",
            "worker@7.service",
            "db2.service",
        ] {
            assert!(s.matches(yes), "{yes} should match");
        }
        for no in [
            "prometheus.socket",
            "prometheus-node-exporter.service",
            "aitbc-debug-shell.service",
            "worker@10.service",
            "db3.service",
            "ssh.service",
        ] {
            assert!(!s.matches(no), "{no} should not match");
        }
    }

    #[test]
    fn bad_patterns_are_rejected() {
        let mut s = Selector::default();
        assert!(s.include("a[.service").is_err());
        assert!(s.include("").is_err());
        assert!(s.exclude("***").is_err());
    }
}

/// `[watch] jobs` and `[watch] services`: units accounted as jobs, or as
/// services, whatever their properties say.
#[derive(Debug, Clone, Default)]
pub struct Kinds {
    jobs: Vec<Pattern>,
    services: Vec<Pattern>,
}

impl Kinds {
    pub fn new(jobs: Vec<Glob>, services: Vec<Glob>) -> Kinds {
        Kinds {
            jobs: jobs.into_iter().map(|g| g.0).collect(),
            services: services.into_iter().map(|g| g.0).collect(),
        }
    }

    /// The kind of `unit`, whose properties make it a job if `is_job`:
    /// `jobs` first, then `services`, then the properties.
    pub fn kind(&self, unit: &str, is_job: bool) -> Kind {
        if self.jobs.iter().any(|p| p.matches(unit)) {
            Kind::Job
        } else if self.services.iter().any(|p| p.matches(unit)) || !is_job {
            Kind::Service
        } else {
            Kind::Job
        }
    }
}
