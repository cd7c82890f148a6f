//! Webhook endpoints: authentication extractors and handlers that only store events. (issue 5)
