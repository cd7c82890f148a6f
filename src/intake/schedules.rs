//! Cron schedules of retention rules. (issue 5)
