//! The HTTP server: router, health, metrics, admin API and status page. (issue 5)
