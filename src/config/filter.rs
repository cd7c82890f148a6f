//! Compiled `[rules.match]` filters (SPEC §3) and their matching against a run.
//!
//! All filters are AND-ed. Globs use `globset` semantics where `*` also matches `/`
//! (so `branches = ["*", "!main"]` means "every branch but main"). In `branches` and
//! `authors` a leading `!` excludes; a list with only exclusions matches everything
//! else. A run without a branch (or author, ...) matches no inclusion pattern but is not
//! excluded either. `tags` do not exclude (`tag_mode = "none"` does that): a leading `!`
//! there is a load error, and so is an empty list under any key (remove the key to
//! match everything).

use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::Regex;

use crate::currents::{CompletionState, Run, RunStatus};

/// How `tags` patterns combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagMode {
    /// At least one run tag matches one pattern.
    #[default]
    Any,
    /// Every pattern matches at least one run tag.
    All,
    /// No run tag matches any pattern.
    None,
}

/// Include/exclude glob lists (`"!x"` excludes).
#[derive(Debug, Clone, Default)]
pub struct GlobList {
    pub patterns: Vec<String>,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl GlobList {
    /// Compiles patterns; the error names the bad pattern.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut inc = GlobSetBuilder::new();
        let mut exc = GlobSetBuilder::new();
        let (mut n_inc, mut n_exc) = (0, 0);
        for p in patterns {
            let (set, pat) = match p.strip_prefix('!') {
                Some(rest) => {
                    n_exc += 1;
                    (&mut exc, rest)
                }
                None => {
                    n_inc += 1;
                    (&mut inc, p.as_str())
                }
            };
            if pat.is_empty() {
                return Err(format!("empty glob pattern {p:?}"));
            }
            let g = Glob::new(pat).map_err(|e| format!("invalid glob {p:?}: {}", e.kind()))?;
            set.add(g);
        }
        let build = |b: GlobSetBuilder, n: usize| -> Result<Option<GlobSet>, String> {
            if n == 0 {
                Ok(None)
            } else {
                b.build().map(Some).map_err(|e| e.to_string())
            }
        };
        Ok(Self {
            patterns: patterns.to_vec(),
            include: build(inc, n_inc)?,
            exclude: build(exc, n_exc)?,
        })
    }

    /// Include/exclude semantics for a single value.
    pub fn matches(&self, value: Option<&str>) -> bool {
        if let (Some(ex), Some(v)) = (&self.exclude, value)
            && ex.is_match(v)
        {
            return false;
        }
        match &self.include {
            Some(inc) => value.is_some_and(|v| inc.is_match(v)),
            None => true,
        }
    }

    /// Whether any value matches (for authors: name or email).
    pub fn matches_any(&self, values: &[&str]) -> bool {
        if let Some(ex) = &self.exclude
            && values.iter().any(|v| ex.is_match(v))
        {
            return false;
        }
        match &self.include {
            Some(inc) => values.iter().any(|v| inc.is_match(v)),
            None => true,
        }
    }
}

/// A compiled `[rules.match]`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub projects: Option<Vec<String>>,
    pub branches: Option<GlobList>,
    pub tags: Option<(Vec<String>, Vec<GlobSet>)>,
    pub tag_mode: TagMode,
    pub authors: Option<GlobList>,
    pub statuses: Option<Vec<RunStatus>>,
    pub completion_states: Option<Vec<CompletionState>>,
    pub message: Option<Regex>,
    pub ci_build_id: Option<Regex>,
    pub frameworks: Option<Vec<String>>,
}

impl Filter {
    /// True when no filter key is set (a rule that applies to every run). The loader
    /// rejects empty lists, so a key that is set always narrows the rule.
    pub fn is_empty(&self) -> bool {
        self.projects.is_none()
            && self.branches.is_none()
            && self.tags.is_none()
            && self.authors.is_none()
            && self.statuses.is_none()
            && self.completion_states.is_none()
            && self.message.is_none()
            && self.ci_build_id.is_none()
            && self.frameworks.is_none()
    }

    /// Compiles the tag patterns (one set per pattern, for `all`). Tag patterns do not
    /// exclude: a leading `!` is an error that points at `tag_mode = "none"`.
    pub fn compile_tags(patterns: &[String]) -> Result<Vec<GlobSet>, String> {
        patterns
            .iter()
            .map(|p| {
                if let Some(tag) = p.strip_prefix('!') {
                    return Err(format!(
                        "{p:?}: tags cannot be excluded with \"!\"; to match runs without the tag, write tags = [\"{tag}\"] with tag_mode = \"none\""
                    ));
                }
                let g = Glob::new(p).map_err(|e| format!("invalid glob {p:?}: {}", e.kind()))?;
                GlobSetBuilder::new()
                    .add(g)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// Whether the run passes every filter (the allocation-free twin of [`Filter::check`]).
    pub fn matches(&self, run: &Run) -> bool {
        self.matches_where(run, true)
    }

    /// Whether the run passes every filter but `statuses` and `completion_states`: it
    /// is a run of the kind the rule is about, whatever its state now. A supersede rule
    /// asks this of the newer run that supersedes: a run that has finished since (or
    /// failed fast) is still newer.
    pub fn matches_ignoring_state(&self, run: &Run) -> bool {
        self.matches_where(run, false)
    }

    fn matches_where(&self, run: &Run, with_state: bool) -> bool {
        if let Some(p) = &self.projects
            && !p.iter().any(|p| p == &run.project_id)
        {
            return false;
        }
        if let Some(b) = &self.branches
            && !b.matches(run.branch())
        {
            return false;
        }
        if let Some((_, sets)) = &self.tags {
            let hit = |s: &GlobSet| run.tags.iter().any(|t| s.is_match(t));
            let ok = match self.tag_mode {
                TagMode::Any => sets.iter().any(hit),
                TagMode::All => sets.iter().all(hit),
                TagMode::None => !sets.iter().any(hit),
            };
            if !ok {
                return false;
            }
        }
        if let Some(a) = &self.authors {
            let c = &run.meta.commit;
            let mut vals: [&str; 2] = [""; 2];
            let mut n = 0;
            for v in [c.author_name.as_deref(), c.author_email.as_deref()]
                .into_iter()
                .flatten()
            {
                vals[n] = v;
                n += 1;
            }
            if !a.matches_any(&vals[..n]) {
                return false;
            }
        }
        if let Some(s) = &self.statuses
            && with_state
            && !s.contains(&run.status)
        {
            return false;
        }
        if let Some(s) = &self.completion_states
            && with_state
            && !s.contains(&run.completion_state)
        {
            return false;
        }
        if let Some(re) = &self.message
            && !re.is_match(run.meta.commit.message.as_deref().unwrap_or(""))
        {
            return false;
        }
        if let Some(re) = &self.ci_build_id
            && !re.is_match(run.meta.ci_build_id.as_deref().unwrap_or(""))
        {
            return false;
        }
        if let Some(f) = &self.frameworks {
            let fw = run.framework().unwrap_or("");
            if !f.iter().any(|x| x.eq_ignore_ascii_case(fw)) {
                return false;
            }
        }
        true
    }

    /// `Ok(())` when the run passes; otherwise the first failing condition, in words
    /// (used by `explain`).
    pub fn check(&self, run: &Run) -> Result<(), String> {
        if let Some(p) = &self.projects
            && !p.iter().any(|p| p == &run.project_id)
        {
            return Err(format!("project {} not in {:?}", run.project_id, p));
        }
        if let Some(b) = &self.branches
            && !b.matches(run.branch())
        {
            return Err(format!(
                "branch {} does not match {:?}",
                run.branch().unwrap_or("(none)"),
                b.patterns
            ));
        }
        if let Some((pats, sets)) = &self.tags {
            let hit = |s: &GlobSet| run.tags.iter().any(|t| s.is_match(t));
            let ok = match self.tag_mode {
                TagMode::Any => sets.iter().any(hit),
                TagMode::All => sets.iter().all(hit),
                TagMode::None => !sets.iter().any(hit),
            };
            if !ok {
                let mode = match self.tag_mode {
                    TagMode::Any => "any",
                    TagMode::All => "all",
                    TagMode::None => "none",
                };
                return Err(format!(
                    "tags {:?} do not satisfy tag_mode {mode} of {:?}",
                    run.tags, pats
                ));
            }
        }
        if let Some(a) = &self.authors {
            let c = &run.meta.commit;
            let vals: Vec<&str> = [c.author_name.as_deref(), c.author_email.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            if !a.matches_any(&vals) {
                return Err(format!("author {:?} does not match {:?}", vals, a.patterns));
            }
        }
        if let Some(s) = &self.statuses
            && !s.contains(&run.status)
        {
            return Err(format!("status {} not in {:?}", run.status, names(s)));
        }
        if let Some(s) = &self.completion_states
            && !s.contains(&run.completion_state)
        {
            return Err(format!(
                "completion state {} not in {:?}",
                run.completion_state,
                names(s)
            ));
        }
        if let Some(re) = &self.message
            && !re.is_match(run.meta.commit.message.as_deref().unwrap_or(""))
        {
            return Err(format!("commit message does not match /{}/", re.as_str()));
        }
        if let Some(re) = &self.ci_build_id
            && !re.is_match(run.meta.ci_build_id.as_deref().unwrap_or(""))
        {
            return Err(format!(
                "ciBuildId {:?} does not match /{}/",
                run.meta.ci_build_id.as_deref().unwrap_or(""),
                re.as_str()
            ));
        }
        if let Some(f) = &self.frameworks {
            let fw = run.framework().unwrap_or("");
            if !f.iter().any(|x| x.eq_ignore_ascii_case(fw)) {
                return Err(format!("framework {fw:?} not in {f:?}"));
            }
        }
        Ok(())
    }
}

fn names<T: std::fmt::Display>(v: &[T]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> GlobList {
        GlobList::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn negation_semantics() {
        let l = list(&["*", "!main"]);
        assert!(l.matches(Some("feat/x")));
        assert!(!l.matches(Some("main")));
        let only_ex = list(&["!main", "!release/*"]);
        assert!(only_ex.matches(Some("dev")));
        assert!(!only_ex.matches(Some("release/1.2")));
        assert!(only_ex.matches(None));
        let inc = list(&["feat/*"]);
        assert!(inc.matches(Some("feat/a/b")));
        assert!(!inc.matches(Some("fix/a")));
        assert!(!inc.matches(None));
    }

    #[test]
    fn matches_agrees_with_check() {
        let text = "[currents]\nprojects = [\"p\"]\n[[rules]]\nname = \"r\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"feat/*\", \"!feat/skip\"]\ntags = [\"a*\"]\ntag_mode = \"all\"\nauthors = [\"*@acme.dev\"]\nstatuses = [\"RUNNING\"]\nmessage = \"^wip\"\nframeworks = [\"pw\"]\n";
        let cfg = crate::config::load_str(text, "t.toml", &[]).unwrap().config;
        let f = &cfg.rules[0].filter;
        let base: Run = serde_json::from_value(serde_json::json!({
            "runId": "r1", "projectId": "p", "createdAt": "2026-01-01T00:00:00Z",
            "completionState": "IN_PROGRESS", "status": "RUNNING", "tags": ["alpha"],
            "meta": {"commit": {"branch": "feat/x", "authorEmail": "d@acme.dev", "message": "wip: x"},
                     "framework": {"type": "pw"}}
        }))
        .unwrap();
        let mut variants = vec![base.clone()];
        let mut v = base.clone();
        v.meta.commit.branch = Some("feat/skip".into());
        variants.push(v);
        let mut v = base.clone();
        v.tags = vec!["beta".into()];
        variants.push(v);
        let mut v = base.clone();
        v.meta.commit.author_email = Some("x@other.dev".into());
        variants.push(v);
        let mut v = base.clone();
        v.meta.commit.message = Some("fix".into());
        variants.push(v);
        let mut v = base.clone();
        v.meta.framework = None;
        variants.push(v);
        for (i, r) in variants.iter().enumerate() {
            assert_eq!(f.matches(r), f.check(r).is_ok(), "variant {i}");
        }
        assert!(f.matches(&variants[0]));
        assert!(variants[1..].iter().all(|r| !f.matches(r)));
    }

    #[test]
    fn bad_glob_is_reported() {
        let e = GlobList::new(&["feat/[".to_string()]).unwrap_err();
        assert!(e.contains("feat/["), "{e}");
    }
}
