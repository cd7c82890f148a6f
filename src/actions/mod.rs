//! The action executor: carries decided actions out durably, with retries. (issue 5)
