//! The contact policy over a 100k-event run of the simulator's harder mix
//! (issue 16), held per real person, every person, split across One IDs or
//! not: the simulator's ground truth says whose each identifier is, and an
//! action counts for the person who owns the address it is sent to (the
//! identifier its channel is delivered to: e-mail to `email_sha256`, ...).
//!
//! Run twice: in the core (the engine's shipped settings, no broker:
//! deterministic, and the same traffic without the new rules shows they
//! bite), and through the running engine on the real broker.
//! `tests/contact_policy.rs` shows the budget and consent cases one by one.
//! The simulator's events are given what it does not make itself: the
//! customer's UTC offset on every event of half the people, and consent
//! statements (opt-outs, some opt-ins later) on events of a fifth.
//!
//! Checked for every action: the cross-channel budget and every per-channel
//! cap (no window of `per` holds more than `max`), consent (no message on a
//! channel the person's newest statement by then opted out of), quiet hours
//! (no message on a quiet channel inside them, local time) and the no-response
//! rest (no message on a channel within the rest after three unanswered:
//! the simulator sends no outcomes, so every message is unanswered).
//!
//! Zero for every rule and person, but one kind the engine cannot know: an
//! opt-out made with identifiers (a customer id and a device) that no chain
//! of events published before the decision links to the profile a message
//! then went to (an e-mail address seen only at the till with a loyalty
//! card). Those are counted (`consent_unlinked`), and the core run asserts
//! that none of them was linkable. Counted the old way (every action of a
//! profile for the person any of its identifiers names), a person could also
//! get messages sent to someone else's address on a profile holding their
//! identifier: the test shows those are the only difference between the two
//! counts. No message goes to a placeholder address typed at the till
//! (`noemail@noemail.com`): the engine blocks it as junk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

#[path = "policy_sim/chains.rs"]
mod chains;

use chains::Chains;
use onejourney_core::output::{NextBestAction, Output};
use onejourney_core::{Decoder, Processor, State};
use onejourney_e2e::{settings, Record, TestEngine};
use onejourney_engine::config::Settings;
use onejourney_simulator::truth::{IdentityTruth, Owner};
use onejourney_simulator::{generate, SimConfig, SimEvent, Simulation};
use serde_json::json;

const DAY: i64 = 86_400_000;
const OFFSETS: [i64; 6] = [-480, -300, 0, 60, 330, 540];

/// A published action, as the checks read it (from the core or the topic).
struct Sent {
    one_id: String,
    channel: String,
    at: i64,
    identifiers: BTreeMap<String, String>,
    deferred: bool,
    /// Decision order: within one One ID (one output partition) later is larger.
    order: i64,
    /// The events published up to the decision (all of them when not known).
    upto: usize,
}

impl Sent {
    fn of(a: &NextBestAction, order: i64, upto: usize) -> Sent {
        Sent {
            one_id: a.one_id.to_string(),
            channel: a.channel.to_string(),
            at: a.decided_at.millis(),
            identifiers: a.identifiers.clone(),
            deferred: a.trigger.timer == Some("quiet_hours_end"),
            order,
            upto,
        }
    }

    fn from_record(r: &Record) -> Sent {
        let v = r.json();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        Sent {
            one_id: s("one_id"),
            channel: s("channel"),
            at: onejourney_core::EventTime::parse_rfc3339(&s("decided_at"))
                .unwrap()
                .millis(),
            identifiers: serde_json::from_value(v["identifiers"].clone()).unwrap(),
            deferred: v["trigger"]["timer"] == "quiet_hours_end",
            order: r.offset,
            upto: usize::MAX,
        }
    }
}

/// What the test added to the simulator's events, per person.
#[derive(Default)]
struct Said {
    /// (event time, channel, granted, index of the event), in event-time order.
    consent: Vec<(i64, &'static str, bool, usize)>,
    /// The identifiers each statement was made with (as actions name them),
    /// by the index of its event.
    named: HashMap<usize, BTreeSet<(String, String)>>,
    offset: Option<i64>,
}

/// Adds UTC offsets and consent statements to the events (consent on
/// events published on time only: a statement published late is not known
/// when the decisions after its event time are taken).
fn add_local_clocks_and_consent(sim: &mut Simulation) -> Vec<Said> {
    let truth = IdentityTruth::from_simulation(sim);
    let ns = Settings::defaults().unwrap().namespaces().unwrap();
    let mut said: Vec<Said> = (0..sim.people.len()).map(|_| Said::default()).collect();
    let mut order: Vec<usize> = (0..sim.events.len()).collect();
    order.sort_by_key(|i| sim.events[*i].at_ms);
    let mut seen = vec![0usize; sim.people.len()];
    for i in order {
        let e: &mut SimEvent = &mut sim.events[i];
        let p = e.person;
        let v = e.value.as_object_mut().unwrap();
        if p.is_multiple_of(2) {
            let offset = OFFSETS[(p / 2) % OFFSETS.len()];
            v.insert("utc_offset_minutes".into(), json!(offset));
            said[p].offset = Some(offset);
        }
        // Statements ride on events that name the person's own account
        // (their customer id or e-mail, not a junk value typed at the till).
        let ids = v.get("identifiers").and_then(|x| x.as_object());
        let named = ids.is_some_and(|m| {
            ["customer_id", "email"].iter().any(|n| {
                m.get(*n)
                    .and_then(|x| x.as_str())
                    .is_some_and(|x| truth.owners.get(&(n.to_string(), x.to_string())) == Some(&Owner::Person(p)))
            })
        });
        if !(named && e.late_ms == 0) {
            continue;
        }
        seen[p] += 1;
        if p % 5 == 1 {
            // The third event opts out of e-mail and push; for half of them
            // the tenth opts back in to e-mail.
            let statement = match seen[p] {
                3 => Some(json!({"email": "opt_out", "push": "opt_out"})),
                10 if p % 10 == 1 => Some(json!({"email": "opt_in"})),
                _ => None,
            };
            if let Some(s) = statement {
                for (c, g) in s.as_object().unwrap() {
                    let c: &'static str = if c == "email" { "email" } else { "push" };
                    said[p].consent.push((e.at_ms, c, g == "opt_in", i));
                }
                let keys = ids.into_iter().flatten().filter_map(|(n, v)| {
                    let k = ns.normalise(n, v.as_str()?).ok()?.ok()?;
                    Some((ns.name(k.ns()).to_string(), k.value().to_string()))
                });
                said[p].named.insert(i, keys.collect());
                v.insert("consent".into(), s);
            }
        }
    }
    said
}

/// Feeds the events to the core as the engine would see them (two
/// partitions per channel, in publication order); returns the actions.
fn run(settings: &Settings, sim: &Simulation) -> Vec<Sent> {
    let ns = settings.namespaces().unwrap();
    let decoder = Decoder::new(ns.clone(), settings.ingest.max_message_bytes).unwrap();
    let mut p = Processor::new(Arc::new(settings.core()), Arc::new(State::new(ns)));
    for part in 0..8 {
        p.register_partition(part, 0);
    }
    let mut actions = Vec::new();
    let mut keep = |released: Vec<onejourney_core::processor::Released>| {
        for r in released {
            let Ok(done) = r.result else { continue };
            let seen = actions.len() as i64;
            actions.extend(done.outputs.iter().filter_map(|o| match o {
                Output::Action(a) => Some(Sent::of(a, seen, r.seq.map_or(usize::MAX, |s| s as usize + 1))),
                _ => None,
            }));
        }
    };
    for (i, e) in sim.events.iter().enumerate() {
        let Ok(ev) = decoder.decode(e.stream.channel(), &e.bytes()) else {
            continue; // junk only: the engine dead-letters it
        };
        let part = e.stream.channel() as u32 * 2 + e.key_partition(2);
        keep(p.offer(ev, part, i as u64, i as u64));
    }
    keep(p.tick(u64::MAX));
    actions
}

/// Whose each (namespace, normalised value) is, as the actions name them.
fn owners(settings: &Settings, sim: &Simulation) -> HashMap<(String, String), usize> {
    let ns = settings.namespaces().unwrap();
    let truth = IdentityTruth::from_simulation(sim);
    let mut out = HashMap::new();
    for ((n, v), owner) in &truth.owners {
        // Keyed as actions name them: e-mail and phone by their hash.
        if let (Owner::Person(p), Ok(Ok(key))) = (owner, ns.normalise(n, v)) {
            out.insert((ns.name(key.ns()).to_string(), key.value().to_string()), *p);
        }
    }
    out
}

/// The largest number of `times` (sorted) in any window of `per`.
fn densest(times: &[i64], per: i64) -> usize {
    (0..times.len())
        .map(|i| times[i..].iter().take_while(|t| **t < times[i] + per).count())
        .max()
        .unwrap_or(0)
}

/// Rule name -> persons breaking it.
type Violations = BTreeMap<&'static str, BTreeSet<usize>>;

/// A message on a channel the person had opted out of, to a profile that
/// held none of the identifiers the opt-out was made with: the index of the
/// statement's event and the profile's identifiers.
type Unlinked = (usize, BTreeMap<String, String>, (usize, i64));

fn check(said: &[Said], by_person: &BTreeMap<usize, Vec<&Sent>>) -> (Violations, Vec<Unlinked>) {
    // The rules are always the shipped ones, whatever the run enforced.
    let shipped = Settings::defaults().unwrap();
    let policy = &shipped.decide.policy;
    let budget = policy.budget.as_ref().unwrap();
    let rest = policy.no_response.as_ref().unwrap();
    let quiet = policy.quiet_hours.as_ref().unwrap();
    let (q_start, q_end) = (
        i64::from(quiet.start.minutes()) * 60_000,
        i64::from(quiet.end.minutes()) * 60_000,
    );
    let mut bad = Violations::new();
    let mut unlinked = Vec::new();
    for (person, list) in by_person {
        let mut flag = |rule| {
            bad.entry(rule).or_default().insert(*person);
        };
        let mut all: Vec<i64> = list.iter().map(|a| a.at).collect();
        all.sort_unstable();
        if densest(&all, budget.per.as_millis() as i64) > budget.max as usize {
            flag("budget");
        }
        let mut per_channel: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
        for a in list {
            per_channel.entry(a.channel.as_str()).or_default().push((a.at, a.order));
            let t = a.at;
            let consent = said[*person]
                .consent
                .iter()
                .rfind(|(at, c, _, _)| *at <= t && *c == a.channel);
            if let Some((_, _, false, seq)) = consent {
                // The profile the action went to held none of the
                // identifiers the statement was made with: nothing the
                // engine had linked the two by when it decided.
                let known = a
                    .identifiers
                    .iter()
                    .any(|(n, v)| said[*person].named[seq].contains(&(n.clone(), v.clone())));
                if !known {
                    unlinked.push((*seq, a.identifiers.clone(), (a.upto, a.at)));
                }
                flag(if known { "consent" } else { "consent_unlinked" });
            }
            if let Some(offset) = said[*person].offset {
                let local = (t + offset * 60_000).rem_euclid(DAY);
                let inside = local >= q_start || local < q_end;
                if inside && quiet.channels.iter().any(|c| c.label() == a.channel) {
                    flag("quiet_hours");
                }
            }
        }
        for (channel, sent) in &mut per_channel {
            sent.sort_unstable();
            let times: Vec<i64> = sent.iter().map(|(t, _)| *t).collect();
            for cap in policy.caps.iter().filter(|c| c.channel.label() == *channel) {
                if densest(&times, cap.per.as_millis() as i64) > cap.max as usize {
                    flag("caps");
                }
            }
            // The rest follows messages decided before: one decided after
            // three unanswered ones, within the rest after the third's wait.
            let n = rest.after as usize;
            let (within, pause) = (
                rest.within.as_millis() as i64,
                (rest.within + rest.suppress_for).as_millis() as i64,
            );
            let rested = |w: &[(i64, i64)]| {
                let (last, next) = (w[n - 1].0, w[n].0);
                let decided_after = w[..n].iter().all(|(_, o)| *o < w[n].1);
                decided_after && last + within <= next && next < last + pause
            };
            if sent.windows(n + 1).any(rested) {
                flag("no_response");
            }
        }
    }
    (bad, unlinked)
}

/// What [`check_all`] found.
struct Checked {
    /// Rule -> real people breaking it, every action counted for the person
    /// whose address it was sent to.
    bad: Violations,
    /// The same, every action counted for the person any identifier of its
    /// profile belongs to (so also messages sent to an address that is not
    /// theirs, a shared or placeholder one, on a profile holding another of
    /// their identifiers): how the run was counted before.
    bad_by_any: Violations,
    /// People reached through more than one One ID, or whose statement
    /// landed on another profile than an action to them.
    split: BTreeSet<usize>,
    /// Actions sent to a placeholder address the till typed
    /// (`noemail@noemail.com`, `test@test.com`).
    to_placeholder: usize,
    /// Of the `consent_unlinked` messages, those whose profile no chain of
    /// the whole run's events links to the identifiers of the statement.
    never_linkable: usize,
    /// Of them, those whose profile the events published before the
    /// decision link to the statement (the engine could have known).
    linkable_before: usize,
    unlinked: usize,
    deferred: usize,
}

/// The identifiers of `a` its channel is delivered to (the namespaces that
/// route to it: e-mail to `email_sha256`, SMS to `phone_sha256`, ...).
fn addresses<'a>(ns: &onejourney_core::ids::Namespaces, a: &'a Sent) -> Vec<(&'a String, &'a String)> {
    a.identifiers
        .iter()
        .filter(|(n, v)| {
            ns.normalise(n, v)
                .ok()
                .and_then(Result::ok)
                .is_some_and(|k| ns.routes(k.ns()).iter().any(|c| c.label() == a.channel))
        })
        .collect()
}

/// Checks every action per real person, split or not: an action counts for
/// the person who owns the address it is sent to.
fn check_all(sim: &Simulation, said: &[Said], actions: &[Sent]) -> Checked {
    let settings = Settings::defaults().unwrap();
    let ns = settings.namespaces().unwrap();
    let owner = owners(&settings, sim);
    let person_of = |ids: &mut dyn Iterator<Item = (&String, &String)>| -> BTreeSet<usize> {
        ids.filter_map(|(n, v)| owner.get(&(n.clone(), v.clone())).copied())
            .collect()
    };
    let mut by_person: BTreeMap<usize, Vec<&Sent>> = BTreeMap::new();
    let mut by_any: BTreeMap<usize, Vec<&Sent>> = BTreeMap::new();
    let mut one_ids: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    let (mut unattributed, mut to_placeholder, mut to_shared) = (0, 0, 0);
    // The simulator's till placeholders, keyed as actions name them (hashed).
    let placeholders: BTreeSet<String> = ["noemail@noemail.com", "test@test.com"]
        .map(onejourney_core::ids::sha256_hex)
        .into_iter()
        .collect();
    let to_a_placeholder = |a: &Sent| a.identifiers.values().any(|v| placeholders.contains(v));
    for a in actions {
        let any = person_of(&mut a.identifiers.iter());
        assert!(
            any.len() <= 1,
            "an action to a profile mixing people: {:?}",
            a.identifiers
        );
        if let Some(p) = any.first() {
            by_any.entry(*p).or_default().push(a);
        }
        let to = person_of(&mut addresses(&ns, a).into_iter());
        match (to.first(), any.first()) {
            (Some(p), _) => {
                by_person.entry(*p).or_default().push(a);
                one_ids.entry(*p).or_default().insert(&a.one_id);
            }
            (None, Some(_)) => to_shared += 1,
            (None, None) => unattributed += 1,
        }
        if to_a_placeholder(a) {
            to_placeholder += 1;
        }
    }
    let mut split: BTreeSet<usize> = one_ids
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(p, _)| *p)
        .collect();
    let (bad, unlinked) = check(said, &by_person);
    let (bad_by_any, _) = check(said, &by_any);
    let mut chains = Chains::of(&sim.events, &owner, &ns);
    let never_linkable = unlinked
        .iter()
        .filter(|(seq, ids, _)| !chains.linked(&said_by(said, *seq).named[seq], ids))
        .count();
    let linkable_before = unlinked
        .iter()
        .filter(|(seq, ids, (upto, at))| {
            // Published before the decision; for one taken when the input
            // ended (a timer), those that happened before it.
            let before = sim.events[..(*upto).min(sim.events.len())]
                .iter()
                .filter(|e| *upto != usize::MAX || e.at_ms <= *at);
            Chains::of(before, &owner, &ns).linked(&said_by(said, *seq).named[seq], ids)
        })
        .count();
    split.extend(bad.get("consent_unlinked").into_iter().flatten());
    let mut channels: BTreeMap<&str, usize> = BTreeMap::new();
    for a in actions {
        *channels.entry(a.channel.as_str()).or_default() += 1;
    }
    let deferred = actions.iter().filter(|a| a.deferred).count();
    let figures = |v: &Violations| {
        v.iter()
            .map(|(r, ps)| (*r, ps.len(), ps.intersection(&split).count()))
            .collect::<Vec<_>>()
    };
    eprintln!(
        "{} actions to {} people ({unattributed} to profiles of shared or junk identifiers only, \
         {to_shared} to a shared address on a profile holding a person's other identifier, \
         {to_placeholder} to a placeholder address), by channel {channels:?}; {deferred} deferred to the end of quiet \
         hours; {} people split (reached through more than one One ID, or said something on a \
         profile not yet joined); violations (rule, people, of them split): {:?}; counting every \
         action for the person any identifier of its profile names: {:?}; {} messages after an \
         opt-out to a profile holding none of its identifiers, {never_linkable} of them to one \
         that no chain of the whole run's events links to them, {linkable_before} to one the \
         events published before the decision link to them",
        actions.len(),
        by_person.len(),
        split.len(),
        figures(&bad),
        figures(&bad_by_any),
        unlinked.len(),
    );
    assert!(by_person.len() > 1000, "{} people reached", by_person.len());
    Checked {
        bad,
        bad_by_any,
        split,
        to_placeholder,
        never_linkable,
        linkable_before,
        unlinked: unlinked.len(),
        deferred,
    }
}

/// The person whose statement rode on event `seq`.
fn said_by(said: &[Said], seq: usize) -> &Said {
    said.iter().find(|s| s.named.contains_key(&seq)).unwrap()
}

/// No rule broken for any real person, except opt-outs the engine could not
/// link to the profile a message went to (counted and explained above).
fn assert_per_real_person(c: &Checked) {
    let knowable: Violations = c
        .bad
        .iter()
        .filter(|(r, _)| **r != "consent_unlinked")
        .map(|(r, ps)| (*r, ps.clone()))
        .collect();
    assert!(knowable.is_empty(), "violations per real person: {knowable:?}");
}

/// Every person who breaks a rule when every action of a profile counts for
/// them also got a message sent to an address that is not theirs: that is
/// what the difference between the two counts is made of.
fn explained(c: &Checked, actions: &[Sent], sim: &Simulation) {
    let settings = Settings::defaults().unwrap();
    let (ns, owner) = (settings.namespaces().unwrap(), owners(&settings, sim));
    let foreign: BTreeSet<usize> = actions
        .iter()
        .filter(|a| {
            addresses(&ns, a)
                .iter()
                .all(|(n, v)| !owner.contains_key(&((*n).clone(), (*v).clone())))
        })
        .flat_map(|a| {
            a.identifiers
                .iter()
                .filter_map(|(n, v)| owner.get(&(n.clone(), v.clone())).copied())
        })
        .collect();
    for (rule, people) in &c.bad_by_any {
        let own = c.bad.get(rule).cloned().unwrap_or_default();
        let unexplained: Vec<&usize> = people.difference(&foreign).filter(|p| !own.contains(p)).collect();
        assert!(unexplained.is_empty(), "{rule}: {unexplained:?}");
    }
}

#[test]
fn no_real_person_gets_more_than_the_contact_policy_allows_over_100k_events() {
    let mut sim = generate(&SimConfig {
        customers: 3200,
        seed: 61,
        days: 120,
        harder: true,
        ..SimConfig::default()
    });
    assert!(sim.events.len() >= 100_000, "{} events", sim.events.len());
    let said = add_local_clocks_and_consent(&mut sim);
    eprintln!("{} events", sim.events.len());

    let settings = Settings::defaults().unwrap();
    let actions = run(&settings, &sim);
    let c = check_all(&sim, &said, &actions);
    assert!(c.deferred > 0, "quiet hours in play");
    assert!(c.split.len() > 100, "split people in play: {}", c.split.len());
    // Every real person holds every rule, split across profiles or not,
    // but for opt-outs the engine had nothing to link to the profile sent to.
    assert_per_real_person(&c);
    // Counted by any identifier of the profile, the only people over a rule
    // are people a message to someone else's address was counted for.
    explained(&c, &actions, &sim);
    // The till's placeholder addresses (`noemail@noemail.com`) are junk to
    // the engine (`ids::is_placeholder_email`): nothing is sent to them.
    assert_eq!(c.to_placeholder, 0, "actions sent to a placeholder address");
    // The opt-outs left: no chain of events published before the decision
    // linked the profile sent to with the statement (deterministic here).
    assert!(
        c.unlinked > 0 && c.never_linkable <= c.unlinked,
        "{} {}",
        c.unlinked,
        c.never_linkable
    );
    assert_eq!(c.linkable_before, 0, "opt-outs the engine could have linked");

    // Not vacuous: without the budget, the no-response rest and quiet
    // hours, the same traffic breaks them for people on one profile.
    let mut lax = Settings::defaults().unwrap();
    lax.decide.policy.budget = None;
    lax.decide.policy.no_response = None;
    lax.decide.policy.quiet_hours = None;
    let actions = run(&lax, &sim);
    let lax = check_all(&sim, &said, &actions);
    for rule in ["budget", "no_response", "quiet_hours"] {
        let people = lax.bad.get(rule).map_or(0, BTreeSet::len);
        assert!(people > 0, "{rule}: broken by no one without it");
    }
}

/// The same mix through the running engine and a real broker: the actions
/// read back from `next-best-actions` hold every rule per real person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_engine_holds_the_contact_policy_per_real_person() {
    let mut sim = generate(&SimConfig {
        customers: 3200,
        seed: 61,
        days: 120,
        harder: true,
        ..SimConfig::default()
    });
    let said = add_local_clocks_and_consent(&mut sim);
    let mut e = TestEngine::start(settings("policysim")).await;
    e.publish_sim(&sim.events).await;
    e.wait_applied(sim.events.len(), Duration::from_secs(600)).await;
    let emitted: f64 = e
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("onejourney_actions_emitted_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let next = e.topics.next_best_actions.clone();
    let records = e
        .read_until(&next, Duration::from_secs(120), |r| r.len() as f64 >= emitted)
        .await;
    assert_eq!(records.len() as f64, emitted, "every emitted action read back");
    let actions: Vec<Sent> = records.iter().map(Sent::from_record).collect();
    let c = check_all(&sim, &said, &actions);
    assert!(c.deferred > 0, "quiet hours in play");
    assert_per_real_person(&c);
    explained(&c, &actions, &sim);
    e.stop().await;
}
