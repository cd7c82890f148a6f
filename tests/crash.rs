//! Crash safety (issue 8): `runwarden serve` runs as a child process and is killed with
//! SIGKILL at chosen points, then restarted on the same store. No acknowledged event is
//! lost and no side effect happens twice. SIGTERM mid-sweep exits 0 and the rest of the
//! work resumes on restart.
//!
//! The kill points are held open with latency faults in the simulator (a request the
//! bot is waiting on), and every step waits on observable state: the simulator's fault
//! and request logs, and the store file read through a `Store` handle.

#[path = "support/child.rs"]
mod child;

use std::time::Duration;

use child::*;
use runwarden::simulator::{Fault, FaultKind};
use runwarden::store::ActionState;

/// The `[store]` lines of the SIGKILL-and-restart tests on PostgreSQL: there a restarted
/// process keeps the leases it finds (another replica may hold them), so the dead
/// process's action is taken over once its lease expires, not at once. 5 s keeps that
/// quick and is longer than the kill takes.
const PG_STORE_LINES: &str = "action_lease = \"5s\"";

/// A world for the SIGKILL tests: on PostgreSQL with the short action lease.
async fn kill_world(rules: &str) -> World {
    let w = World::new(rules, Env::default()).await;
    if w.is_postgres() {
        w.write_config_with_store_lines(rules, PG_STORE_LINES);
    }
    w
}

const SUPERSEDE: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"*\", \"!main\"]\n";

/// Long enough that a held request never returns during a test.
const HOLD_MS: u64 = 600_000;

fn hold(method: &str, path: &str) -> Fault {
    Fault::new(FaultKind::Latency { ms: HOLD_MS }).on(method, path)
}

/// Waits until fault `id` has fired (a fault with `times: 1` leaves the list then).
async fn fired(w: &World, id: u64) {
    eventually("the fault to fire", 60, || async {
        (!w.sim.faults().iter().any(|f| f.id == id)).then_some(())
    })
    .await;
}

struct Pair {
    old: String,
    new: String,
}

fn pair(w: &World, branch: &str) -> Pair {
    let old = w
        .sim
        .add_run(run(branch, &format!("{branch}-old"), 10))
        .unwrap()
        .run_id;
    let new = w
        .sim
        .add_run(run(branch, &format!("{branch}-new"), 1))
        .unwrap()
        .run_id;
    Pair { old, new }
}

async fn wait_done(
    w: &World,
    store: &runwarden::store::Store,
    run_id: &str,
) -> runwarden::store::ActionRow {
    let key = format!("cancel:{run_id}");
    eventually("the cancel to be done", 60, || async {
        store
            .action_by_key(&key)
            .await
            .unwrap()
            .filter(|a| a.state.is_terminal())
    })
    .await;
    let a = store.action_by_key(&key).await.unwrap().unwrap();
    assert_eq!(
        a.state,
        ActionState::Done,
        "{a:#?}; mutations: {:#?}",
        w.sim.mutation_log()
    );
    a
}

#[tokio::test]
async fn sigkill_after_the_event_is_committed_but_before_it_is_decided() {
    let w = World::new(SUPERSEDE, Env::default()).await;
    let p = pair(&w, "feat/a");
    // The processor's read of the run is held: the event is stored, not decided.
    let id = w
        .sim
        .inject_fault(hold("GET", &format!("/v1/runs/{}", p.new)));
    let bot = w.serve().await;
    assert_eq!(
        currents_hook(&w, &bot, "RUN_START", &p.new).await.status(),
        202
    );
    fired(&w, id).await;
    let store = w.store().await;
    assert_eq!(store.count_unprocessed().await.unwrap(), 1);
    bot.kill().await;

    // Dead: the event is still there, undecided; nothing was done.
    assert_eq!(
        store.count_unprocessed().await.unwrap(),
        1,
        "the acknowledged event survived"
    );
    assert!(store.audit(None, None, 10).await.unwrap().is_empty());
    assert!(w.sim.mutation_log().is_empty());

    let bot = w.serve().await;
    let a = wait_done(&w, &store, &p.old).await;
    assert_eq!(a.attempts, 1);
    assert_eq!(store.count_unprocessed().await.unwrap(), 0);
    let audit = store.audit(None, None, 10).await.unwrap();
    assert_eq!(audit.len(), 1, "decided once: {audit:#?}");
    let cancel = format!("/v1/runs/{}/cancel", p.old);
    let log = w.entries(&cancel);
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0].status, 200);
    assert_eq!(w.sim.mutation_log().len(), 1, "nothing else mutated");
    // The sender retrying the same event now is a duplicate.
    assert_eq!(
        currents_hook(&w, &bot, "RUN_START", &p.new).await.status(),
        200
    );
    bot.kill().await;
}

#[tokio::test]
async fn sigkill_after_the_decision_but_before_the_cancel_reaches_the_world() {
    let w = kill_world(SUPERSEDE).await;
    let p = pair(&w, "feat/b");
    let cancel = format!("/v1/runs/{}/cancel", p.old);
    // The cancel request is held before the simulator acts on it.
    let id = w.sim.inject_fault(hold("PUT", &cancel));
    let bot = w.serve().await;
    assert_eq!(
        currents_hook(&w, &bot, "RUN_START", &p.new).await.status(),
        202
    );
    fired(&w, id).await;
    let store = w.store().await;
    let a = store
        .action_by_key(&format!("cancel:{}", p.old))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.state, a.attempts),
        (ActionState::Running, 0),
        "claimed, in flight: {a:#?}"
    );
    bot.kill().await;
    assert_eq!(
        w.sim.run(&p.old).unwrap().completion_state.as_str(),
        "IN_PROGRESS",
        "not acted"
    );

    // On SQLite the restart hands the dead process's lease back at once (not after
    // 60 s); on PostgreSQL the action is taken over when its 5 s lease runs out.
    let started = std::time::Instant::now();
    let bot = w.serve().await;
    let a = wait_done(&w, &store, &p.old).await;
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "resumed before the lease would expire"
    );
    assert_eq!(
        bot.log_text().contains("released the leases"),
        !w.is_postgres(),
        "{}",
        bot.log_text()
    );
    assert_eq!((a.attempts, a.claims), (1, 2), "{a:#?}");
    let log = w.entries(&cancel);
    assert_eq!(log.len(), 1, "one cancel reached the world: {log:#?}");
    assert_eq!(log[0].status, 200);
    assert_eq!(store.audit(None, None, 10).await.unwrap().len(), 1);
    bot.kill().await;
}

#[tokio::test]
async fn sigkill_after_the_cancel_took_effect_but_before_it_was_recorded() {
    let w = kill_world(SUPERSEDE).await;
    let p = pair(&w, "feat/c");
    let cancel = format!("/v1/runs/{}/cancel", p.old);
    // The first cancel is carried out and its connection dropped (the answer is lost);
    // the client's immediate retry is held. The bot has acted and does not know it.
    w.sim
        .inject_fault(Fault::new(FaultKind::Drop).on("PUT", &cancel).applied());
    let id = w.sim.inject_fault(hold("PUT", &cancel).after(1));
    let bot = w.serve().await;
    assert_eq!(
        currents_hook(&w, &bot, "RUN_START", &p.new).await.status(),
        202
    );
    fired(&w, id).await;
    assert_eq!(
        w.sim.run(&p.old).unwrap().completion_state.as_str(),
        "CANCELED",
        "acted"
    );
    let store = w.store().await;
    let a = store
        .action_by_key(&format!("cancel:{}", p.old))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.state, a.attempts),
        (ActionState::Running, 0),
        "not recorded: {a:#?}"
    );
    bot.kill().await;

    let started = std::time::Instant::now();
    let bot = w.serve().await;
    let a = wait_done(&w, &store, &p.old).await;
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "resumed before the lease would expire"
    );
    assert!(
        a.detail
            .as_deref()
            .unwrap_or("")
            .contains("already done (422"),
        "{a:#?}"
    );
    // The world saw one cancel take effect; the repeat was answered 422 and counted done.
    let log = w.entries(&cancel);
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!((log[0].status, log[0].fault.as_deref()), (0, Some("drop")));
    assert_eq!(log[1].status, 422);
    let run = w.sim.run(&p.old).unwrap();
    assert_eq!(run.completion_state.as_str(), "CANCELED");
    bot.kill().await;
}

const RETENTION: &str = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n";

#[tokio::test]
async fn sigterm_mid_sweep_exits_0_and_the_rest_resumes_on_restart() {
    let w = World::new(RETENTION, Env::default()).await;
    let n = 96;
    let mut ids = Vec::new();
    for i in 0..n {
        let mut r = run(&format!("feat/old-{i}"), &format!("sha{i}"), 60 * 24 * 40);
        r.state = Some("passed".into());
        ids.push(w.sim.add_run(r).unwrap().run_id);
    }
    // Every delete takes 1.5 s: the sweep is still going when SIGTERM comes.
    let slow = w.sim.inject_fault(
        Fault::new(FaultKind::Latency { ms: 1500 })
            .on("DELETE", "/v1/runs")
            .always(),
    );
    let bot = w.serve().await;
    let r = w
        .http
        .post(bot.url("/api/sweep/retention"))
        .bearer_auth(&w.env.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    eventually("the first delete", 60, || async {
        (!w.sim.mutation_log().is_empty()).then_some(())
    })
    .await;
    let (status, logs) = bot.terminate(Duration::from_secs(60)).await;
    assert!(status.success(), "graceful exit 0, got {status}: {logs:#?}");

    let store = w.store().await;
    let pending = store.pending_actions().await.unwrap();
    assert!(
        !pending.is_empty(),
        "no work remained at shutdown: {} done, {} DELETEs sent; bot: {logs:#?}",
        store.audit(None, None, 1000).await.unwrap().len(),
        w.sim.mutation_log().len()
    );
    assert!(
        pending.iter().all(|a| a.state == ActionState::Pending),
        "no lease left behind: {pending:#?}"
    );
    let deleted_before = n - ids.iter().filter(|id| w.sim.run(id).is_some()).count();
    assert!(deleted_before < n);

    w.sim.remove_fault(slow);
    let bot = w.serve().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let audit = store.audit(None, None, 1000).await.unwrap();
        if audit
            .iter()
            .filter(|e| e.outcome.as_str() == "done")
            .count()
            == n
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every delete done: {:#?}\nbot: {}",
            store.pending_actions().await.unwrap(),
            bot.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &ids {
        assert!(w.sim.run(id).is_none(), "{id} deleted");
        let log = w.entries(&format!("/v1/runs/{id}"));
        assert_eq!(log.len(), 1, "one DELETE per run: {log:#?}");
        assert_eq!(log[0].status, 200);
    }
    bot.kill().await;
}

/// `serve` starting on a SQLite file that a running `sweep` is acting from leaves the
/// sweep's leases alone (their holder is alive): the delete it has in flight is not
/// claimed and sent a second time. (A lease whose holder is gone is handed back at
/// once: the SIGKILL tests above.)
#[tokio::test]
async fn serve_leaves_the_leases_of_a_live_sweep_on_the_same_file_alone() {
    let w = World::sqlite(RETENTION, Env::default()).await;
    let mut r = run("feat/old", "sha1", 60 * 24 * 40);
    r.state = Some("passed".into());
    let id = w.sim.add_run(r).unwrap().run_id;
    let delete = format!("/v1/runs/{id}");
    let held = w.sim.inject_fault(hold("DELETE", &delete));
    let mut sweep = w
        .command(&["sweep", "--rule", "retention"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    fired(&w, held).await;
    let store = w.store().await;
    let key = format!("delete:{id}");
    let a = store.action_by_key(&key).await.unwrap().unwrap();
    assert_eq!(a.state, ActionState::Running, "{a:#?}");
    let holder = a.worker_id.clone().expect("leased");
    assert!(
        holder.starts_with(&format!("{}-", sweep.id())),
        "the sweep holds it: {a:#?}"
    );

    let bot = w.serve().await;
    let a = store.action_by_key(&key).await.unwrap().unwrap();
    assert_eq!(
        (a.state, a.worker_id.as_deref(), a.claims),
        (ActionState::Running, Some(holder.as_str()), 1),
        "still the sweep's: {a:#?}; serve: {}",
        bot.log_text()
    );
    assert!(
        !bot.log_text().contains("released the leases"),
        "{}",
        bot.log_text()
    );
    bot.kill().await;
    sweep.kill().unwrap();
    sweep.wait().unwrap();
    assert!(w.entries(&delete).len() <= 1, "{:#?}", w.entries(&delete));
}

/// SIGTERM while the processor works through a backlog and the Currents API accepts
/// requests but never answers them: the current pass gets `LOOP_SHUTDOWN_GRACE` (5 s),
/// then the process exits 0, well before a supervisor's SIGKILL (Docker's 10 s), and the
/// events it had not finished are still in the store, to be processed at the next start.
#[tokio::test]
async fn sigterm_with_a_backlog_and_a_hung_api_exits_0_within_the_grace() {
    let w = World::new(SUPERSEDE, Env::default()).await;
    let pairs: Vec<Pair> = (0..3)
        .map(|i| pair(&w, &format!("feat/hung-{i}")))
        .collect();
    // One request outlasts any grace (the tests' config says 2 s).
    let text = std::fs::read_to_string(&w.config).unwrap();
    let text = text.replace("request_timeout = \"2s\"", "request_timeout = \"120s\"");
    assert!(text.contains("\"120s\""), "{text}");
    std::fs::write(&w.config, text).unwrap();
    let hung = w.sim.inject_fault(hold("GET", "/v1").always());
    let bot = w.serve().await;
    for p in &pairs {
        assert_eq!(
            currents_hook(&w, &bot, "RUN_START", &p.new).await.status(),
            202
        );
    }
    eventually("the processor to wait on the API", 30, || async {
        w.sim
            .faults()
            .iter()
            .any(|f| f.id == hung && f.fired > 0)
            .then_some(())
    })
    .await;
    let began = std::time::Instant::now();
    let (status, logs) = bot.terminate(Duration::from_secs(60)).await;
    let took = began.elapsed();
    assert!(status.success(), "graceful exit 0, got {status}: {logs:#?}");
    assert!(
        took < Duration::from_secs(9),
        "exited {took:?} after SIGTERM (the grace is 5 s): {logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("still busy")),
        "the dropped pass is logged: {logs:#?}"
    );
    let store = w.store().await;
    assert!(
        store.count_unprocessed().await.unwrap() > 0,
        "what was not processed stays in the store"
    );
    w.sim.remove_fault(hung);
}

/// SIGKILL while holding the poller's lease (three poll intervals long): on a SQLite
/// store the next `serve` hands back the locks of processes that are gone, so it polls
/// at once instead of an hour later with `poll_interval = "20m"`.
#[tokio::test]
async fn after_a_sigkill_the_next_serve_polls_at_once() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let text = std::fs::read_to_string(&w.config).unwrap();
    let text = text.replace("poll_interval = \"0s\"", "poll_interval = \"20m\"");
    assert!(text.contains("\"20m\""), "{text}");
    std::fs::write(&w.config, text).unwrap();
    let store = w.store().await;
    let holder = || async {
        store
            .lease_holder(runwarden::intake::poller::LEASE_NAME)
            .await
            .unwrap()
            .map(|(h, _)| h)
    };
    let bot = w.serve().await;
    let first = format!("{}-", bot.pid());
    eventually("the first poll", 30, || async {
        holder().await.filter(|h| h.starts_with(&first))
    })
    .await;
    bot.kill().await;
    let bot = w.serve().await;
    let second = format!("{}-", bot.pid());
    eventually("a poll by the new process", 10, || async {
        holder().await.filter(|h| h.starts_with(&second))
    })
    .await;
    bot.kill().await;
}
