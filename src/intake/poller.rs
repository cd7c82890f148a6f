//! Polling the Currents API to reconcile what webhooks missed. (issue 5)
