//! Intake: how runwarden learns about runs — webhooks, the poller and cron schedules.

pub mod poller;
pub mod processor;
pub mod schedules;
pub mod webhooks;
