//! Several replicas on one PostgreSQL database (issue 10): three `runwarden serve` child
//! processes share a fresh database and an in-process simulator. Webhooks are spread
//! across them, the same delivery is sent to all of them (one 202, the others 200), and
//! the replica carrying out a cancel is killed with SIGKILL while the cancel is held in
//! flight by a latency fault. Then:
//! - every cancel reached the simulator exactly once (its mutation log), the held one
//!   after its lease expired, carried out by a surviving replica;
//! - every retention slot (a schedule firing every second) was fired by one replica only;
//! - polling was taken over by a surviving replica within the poller lease period.
//!
//! The database comes from `tests/support/postgres.rs` (`RUNWARDEN_TEST_POSTGRES_URL`, or
//! a throwaway cluster); the test never skips.

#[path = "support/child.rs"]
mod child;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use child::postgres as pg;
use child::*;
use runwarden::simulator::{Fault, FaultKind};
use runwarden::store::{ActionState, Store};

const RULES: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"*\", \"!main\"]\n\n[[rules]]\nname = \"every-second\"\nkind = \"retention\"\nschedule = \"* * * * * *\"\nolder_than = \"30d\"\n";

/// `[store] action_lease` of the replicas: a dead replica's action is taken over after it.
const ACTION_LEASE: Duration = Duration::from_secs(3);
/// The poller lease of a 1 s poll interval (`max(3 × interval, 10 s)`, intake/poller.rs).
const POLLER_LEASE: Duration = Duration::from_secs(10);

/// The worker id of a replica starts with its pid (`{pid}-{uuid}`).
fn pid_of(worker_id: &str) -> i32 {
    worker_id.split('-').next().unwrap().parse().unwrap()
}

/// The retention slots a replica's log says it fired.
fn fired_slots(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.contains("retention slot fired"))
        .filter_map(|l| l.split("slot=").nth(1))
        .map(strip_ansi)
        .collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out.trim().to_string()
}

async fn poller_holder(store: &Store) -> Option<String> {
    store
        .lease_holder("poller")
        .await
        .unwrap()
        .filter(|(_, expires)| *expires > chrono::Utc::now())
        .map(|(holder, _)| holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_the_work_and_survive_a_sigkill() {
    let db = pg::fresh_database().await;
    let w = World::new(RULES, Env::default()).await;
    w.write_config_with(RULES, &w.sim.currents_url(), &db);
    // Polling every second, and a short action lease.
    let text = std::fs::read_to_string(&w.config).unwrap();
    let text = text
        .replace("poll_interval = \"0s\"", "poll_interval = \"1s\"")
        .replace(
            &format!("[store]\nurl = \"{db}\"\n"),
            &format!(
                "[store]\nurl = \"{db}\"\naction_lease = \"{}s\"\n",
                ACTION_LEASE.as_secs()
            ),
        );
    assert!(text.contains("action_lease"), "{text}");
    std::fs::write(&w.config, text).unwrap();

    // The first replica migrates the database and takes the poller lease.
    let mut bots = vec![w.serve().await];
    let store = Store::connect(&db).await.unwrap();
    eventually("the first replica to poll", 20, || async {
        poller_holder(&store).await
    })
    .await;
    bots.push(w.serve().await);
    bots.push(w.serve().await);

    // Branch 0's cancel is held in flight (before the simulator acts on it). The hold is
    // in place before the newer run exists: a poll may decide the cancel at any time.
    let mut hold = None;
    let pairs: Vec<(String, String)> = (0..6)
        .map(|i| {
            let b = format!("feat/r{i}");
            let old = w
                .sim
                .add_run(run(&b, &format!("{b}-old"), 10))
                .unwrap()
                .run_id;
            if i == 0 {
                hold = Some(
                    w.sim.inject_fault(
                        Fault::new(FaultKind::Latency { ms: 600_000 })
                            .on("PUT", format!("/v1/runs/{old}/cancel")),
                    ),
                );
            }
            let new = w
                .sim
                .add_run(run(&b, &format!("{b}-new"), 1))
                .unwrap()
                .run_id;
            (old, new)
        })
        .collect();
    let hold = hold.unwrap();

    // The same delivery to every replica at once: stored once.
    let sends = bots
        .iter()
        .map(|b| currents_hook(&w, b, "RUN_START", &pairs[0].1));
    let mut statuses: Vec<u16> = futures::future::join_all(sends)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 202]);

    // The replica that claimed the held cancel dies mid-action.
    eventually("the held cancel to be in flight", 30, || async {
        (!w.sim.faults().iter().any(|f| f.id == hold)).then_some(())
    })
    .await;
    let action = store
        .action_by_key(&format!("cancel:{}", pairs[0].0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(action.state, ActionState::Running, "{action:#?}");
    let victim = pid_of(action.worker_id.as_deref().unwrap());
    let i = bots
        .iter()
        .position(|b| b.pid() == victim)
        .expect("a replica holds the action");
    let mut logs = vec![bots.remove(i).kill().await];
    assert_eq!(
        w.sim.run(&pairs[0].0).unwrap().completion_state.as_str(),
        "IN_PROGRESS",
        "not acted"
    );

    // Polling: if the dead replica was not the poller, the poller dies too (SIGKILL), so
    // that a takeover is always exercised.
    let holder = poller_holder(&store).await;
    let live = |bots: &[ChildBot], h: &Option<String>| {
        h.as_deref()
            .is_some_and(|h| bots.iter().any(|b| b.pid() == pid_of(h)))
    };
    if live(&bots, &holder) {
        let p = pid_of(holder.as_deref().unwrap());
        let i = bots.iter().position(|b| b.pid() == p).unwrap();
        logs.push(bots.remove(i).kill().await);
    }
    let killed_at = Instant::now();

    // The rest of the webhooks, spread across the survivors, each sent twice.
    for (n, (_, new)) in pairs.iter().enumerate().skip(1) {
        let first = &bots[n % bots.len()];
        let second = &bots[(n + 1) % bots.len()];
        assert_eq!(
            currents_hook(&w, first, "RUN_START", new).await.status(),
            202
        );
        assert_eq!(
            currents_hook(&w, second, "RUN_START", new).await.status(),
            200
        );
    }

    // Polling taken over within a lease period.
    let new_holder = eventually(
        "a surviving replica to take the poller lease",
        30,
        || async {
            let h = poller_holder(&store).await;
            if live(&bots, &h) { h } else { None }
        },
    )
    .await;
    let takeover = killed_at.elapsed();
    eprintln!("poller lease taken over by {new_holder} after {takeover:?}");
    assert!(
        takeover <= POLLER_LEASE + Duration::from_secs(3),
        "took {takeover:?}"
    );
    let taken = chrono::Utc::now();
    eventually("a poll by the new poller", 10, || async {
        let slot = chrono::Utc::now().timestamp_millis() / 1000; // poll_interval 1 s
        for id in [slot, slot - 1] {
            let d = store
                .find_delivery("poll", &format!("poll:{id}"))
                .await
                .unwrap();
            if let Some(d) = d.filter(|d| d.received_at >= taken - chrono::Duration::seconds(1)) {
                return Some(d);
            }
        }
        None
    })
    .await;
    assert!(live(&bots, &Some(new_holder)));

    // Every cancel done, each exactly once in the world, the held one by a survivor.
    for (old, new) in &pairs {
        let key = format!("cancel:{old}");
        let a = eventually("the cancel to be done", 60, || async {
            store
                .action_by_key(&key)
                .await
                .unwrap()
                .filter(|a| a.state.is_terminal())
        })
        .await;
        assert_eq!(
            a.state,
            ActionState::Done,
            "{a:#?}; mutations: {:#?}",
            w.sim.mutation_log()
        );
        let log = w.entries(&format!("/v1/runs/{old}/cancel"));
        assert_eq!(log.len(), 1, "one cancel of {old}: {log:#?}");
        assert_eq!(log[0].status, 200);
        assert!(
            w.entries(&format!("/v1/runs/{new}/cancel")).is_empty(),
            "the newest run is spared"
        );
        assert_eq!(
            w.sim.run(old).unwrap().completion_state.as_str(),
            "CANCELED"
        );
    }
    let held = store
        .action_by_key(&format!("cancel:{}", pairs[0].0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((held.attempts, held.claims), (1, 2), "{held:#?}");
    let cancels = w
        .sim
        .mutation_log()
        .iter()
        .filter(|e| e.path.ends_with("/cancel"))
        .count();
    assert_eq!(cancels, pairs.len(), "{:#?}", w.sim.mutation_log());
    let audit = store
        .audit(None, Some("cancel-superseded"), 100)
        .await
        .unwrap();
    assert_eq!(
        audit.len(),
        pairs.len(),
        "one decision per superseded run: {audit:#?}"
    );

    // Schedules: a few more slots, then every slot fired by one replica only.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for b in bots {
        let (status, lines) = b.terminate(Duration::from_secs(30)).await;
        assert!(status.success(), "{status}");
        logs.push(lines);
    }
    let all: Vec<String> = logs.iter().flat_map(|l| fired_slots(l)).collect();
    let distinct: HashSet<&String> = all.iter().collect();
    eprintln!(
        "{} retention slots fired, by {} replicas",
        all.len(),
        logs.len()
    );
    assert!(all.len() >= 3, "slots fired: {all:?}");
    assert_eq!(distinct.len(), all.len(), "a slot fired twice: {all:?}");
    assert!(store.last_slot("every-second").await.unwrap().is_some());
}
