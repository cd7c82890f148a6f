//! Pools of realistic names used to fill in runs.

pub const SPEC_AREAS: &[&str] = &[
    "auth",
    "checkout",
    "cart",
    "search",
    "profile",
    "settings",
    "billing",
    "admin",
    "onboarding",
    "dashboard",
    "reports",
    "api",
];

pub const SPEC_NAMES: &[&str] = &[
    "login",
    "logout",
    "signup",
    "reset-password",
    "add-item",
    "remove-item",
    "payment",
    "coupon",
    "filters",
    "pagination",
    "avatar",
    "notifications",
    "invoices",
    "users",
    "permissions",
    "tour",
    "widgets",
    "export",
    "health",
    "rate-limits",
];

pub const AUTHORS: &[(&str, &str)] = &[
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Linus Chen", "linus.chen@example.com"),
    ("Margaret Hamilton", "margaret@example.com"),
    ("Alan Kay", "alan.kay@example.com"),
    (
        "dependabot[bot]",
        "49699333+dependabot[bot]@users.noreply.github.com",
    ),
];

pub const MESSAGES: &[&str] = &[
    "fix: handle empty cart on checkout",
    "feat: add coupon codes",
    "chore(deps): bump playwright to 1.52.0",
    "refactor: extract payment client",
    "fix login redirect loop",
    "feat(search): typo tolerance",
    "test: stabilise flaky notifications spec",
    "docs: update README",
    "perf: cache user permissions",
    "Merge pull request #412 from acme/feat/invoices",
];

pub const FEATURE_BRANCHES: &[&str] = &[
    "feat/coupons",
    "feat/invoices",
    "fix/login-redirect",
    "chore/deps",
    "feat/search-typos",
    "release/2.4",
    "renovate/playwright-1.x",
];

pub const PW_GROUPS: &[&str] = &[
    "chromium",
    "firefox",
    "webkit",
    "mobile-chrome",
    "mobile-safari",
];
pub const CY_GROUPS: &[&str] = &["e2e-chrome", "e2e-firefox", "e2e-electron", "component"];

pub fn browser_for_group(group: &str, cypress: bool) -> (&'static str, &'static str) {
    let g = group.to_ascii_lowercase();
    if g.contains("firefox") {
        ("firefox", "138.0")
    } else if g.contains("webkit") || g.contains("safari") {
        ("webkit", "18.4")
    } else if g.contains("electron") {
        ("electron", "130.0.6723.137")
    } else if cypress {
        ("chrome", "136.0.7103.113")
    } else {
        ("chromium", "136.0.7103.25")
    }
}

pub fn spec_path(area: &str, name: &str, cypress: bool) -> String {
    if cypress {
        format!("cypress/e2e/{area}/{name}.cy.ts")
    } else {
        format!("tests/{area}/{name}.spec.ts")
    }
}
