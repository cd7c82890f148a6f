//! GitHub API client over octocrab. (issue 6)
