//! Compiled `[rules.match]` filters (SPEC §3) and their matching against a run.
//!
//! All filters are AND-ed. Globs use `globset` semantics where `*` also matches `/`
//! (so `branches = ["*", "!main"]` means "every branch but main"). In `branches` and
//! `authors` a leading `!` excludes; a list with only exclusions matches everything
//! else. A run without a branch (or author, ...) matches no inclusion pattern but is not
//! excluded either. `tags` do not exclude (`tag_mode = "none"` does that): a leading `!`
//! there is a load error, and so is an empty list under any key (remove the key to
//! match everything).
//!
//! Every glob list (`branches`, `tags`, `authors`, an orphan rule's `workflows`) also
//! matches a value spelt exactly as the pattern is written, for inclusions and `!`
//! exclusions alike: `authors = ["dependabot[bot]"]` matches GitHub's bot
//! `dependabot[bot]`, which the glob alone would not (`[bot]` is a character class, so
//! the glob matches `dependabotb`), and `"!renovate[bot]"` excludes `renovate[bot]`. A
//! retention rule's `pin_tags` read their entries the same way. The exact comparison is
//! case-sensitive, as the globs are. Inside a wider glob, a literal bracket is written
//! as a one-character class: `"*[[]bot[]]*"` matches `49699333+dependabot[bot]@users...`.

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

/// Include/exclude glob lists (`"!x"` excludes). Each pattern matches what it matches
/// as a glob and, besides, the value spelt exactly as the pattern is written
/// (`dependabot[bot]`; see the module's documentation).
#[derive(Debug, Clone, Default)]
pub struct GlobList {
    pub patterns: Vec<String>,
    include: Option<Patterns>,
    exclude: Option<Patterns>,
}

/// Globs, with the spellings of those that do not match themselves as globs.
#[derive(Debug, Clone)]
struct Patterns {
    set: GlobSet,
    /// The patterns, as written, that their glob does not match (`dependabot[bot]`,
    /// `{a,b}`): a value equal to one of them matches too.
    exact: Vec<String>,
}

impl Patterns {
    fn is_match(&self, value: &str) -> bool {
        self.exact.iter().any(|p| p == value) || self.set.is_match(value)
    }
}

/// Whether `value` is spelt as `pattern` is written, or matches its compiled glob `set`
/// (the glob of one `tags` entry).
fn tag_pattern_matches(pattern: &str, set: &GlobSet, value: &str) -> bool {
    value == pattern || set.is_match(value)
}

impl GlobList {
    /// Compiles patterns; the error names the bad pattern.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut inc = (GlobSetBuilder::new(), Vec::new(), 0);
        let mut exc = (GlobSetBuilder::new(), Vec::new(), 0);
        for p in patterns {
            let ((set, exact, n), pat) = match p.strip_prefix('!') {
                Some(rest) => (&mut exc, rest),
                None => (&mut inc, p.as_str()),
            };
            if pat.is_empty() {
                return Err(format!("empty glob pattern {p:?}"));
            }
            let g = Glob::new(pat).map_err(|e| format!("invalid glob {p:?}: {}", e.kind()))?;
            // `dependabot[bot]` as a glob matches `dependabotb`, not itself.
            if !g.compile_matcher().is_match(pat) {
                exact.push(pat.to_string());
            }
            set.add(g);
            *n += 1;
        }
        let build = |(b, exact, n): (GlobSetBuilder, Vec<String>, usize)| {
            if n == 0 {
                Ok(None)
            } else {
                b.build()
                    .map(|set| Some(Patterns { set, exact }))
                    .map_err(|e| e.to_string())
            }
        };
        Ok(Self {
            patterns: patterns.to_vec(),
            include: build(inc)?,
            exclude: build(exc)?,
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
    /// exclude: a leading `!` is an error that points at `tag_mode = "none"`. A tag spelt
    /// exactly as a pattern is written matches it too, whatever the glob makes of it
    /// (`Filter::tags` keeps the patterns beside their sets for that).
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

    /// Whether the run's tags satisfy `tag_mode` over the `tags` patterns (`pats[i]`
    /// compiled as `sets[i]`).
    fn tags_pass(&self, run: &Run, pats: &[String], sets: &[GlobSet]) -> bool {
        let mut each = pats.iter().zip(sets);
        let hit = |(p, s): (&String, &GlobSet)| {
            run.tags
                .iter()
                .any(|t| tag_pattern_matches(p, s, t.as_str()))
        };
        match self.tag_mode {
            TagMode::Any => each.any(hit),
            TagMode::All => each.all(hit),
            TagMode::None => !each.any(hit),
        }
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
        if let Some((pats, sets)) = &self.tags
            && !self.tags_pass(run, pats, sets)
        {
            return false;
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
        if let Some((pats, sets)) = &self.tags
            && !self.tags_pass(run, pats, sets)
        {
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

    /// GitHub's bots are `dependabot[bot]`, `renovate[bot]`, `github-actions[bot]`: as
    /// globs, `[bot]` is a character class, so each pattern also matches its own
    /// spelling, to include and to exclude.
    #[test]
    fn a_pattern_matches_its_exact_spelling_too() {
        let inc = list(&["dependabot[bot]", "github-actions[bot]"]);
        assert!(inc.matches(Some("dependabot[bot]")));
        assert!(inc.matches_any(&["github-actions[bot]", "x@y.z"]));
        assert!(inc.matches(Some("dependabotb")), "the glob still applies");
        assert!(
            !inc.matches(Some("Dependabot[bot]")),
            "case-sensitive, as the globs"
        );
        let exc = list(&["!renovate[bot]"]);
        assert!(!exc.matches(Some("renovate[bot]")));
        assert!(!exc.matches_any(&["renovate[bot]", "bot@renovateapp.com"]));
        assert!(exc.matches(Some("ada")));
        let both = list(&["*", "!{a,b}"]);
        assert!(!both.matches(Some("{a,b}")));
        assert!(!both.matches(Some("a")));
        assert!(both.matches(Some("c")));
    }

    /// What the module's documentation says about a literal bracket inside a wider glob.
    #[test]
    fn a_one_character_class_matches_a_literal_bracket() {
        let l = list(&["*[[]bot[]]*"]);
        assert!(l.matches(Some("49699333+dependabot[bot]@users.noreply.github.com")));
        assert!(!l.matches(Some("49699333+dependabotb@users.noreply.github.com")));
    }

    #[test]
    fn bad_glob_is_reported() {
        let e = GlobList::new(&["feat/[".to_string()]).unwrap_err();
        assert!(e.contains("feat/["), "{e}");
    }
}
