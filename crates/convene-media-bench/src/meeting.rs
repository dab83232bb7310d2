//! The meeting workload's report: its table, and `--capacity`, the search for the most rooms of
//! 4 a server carries within the targets (frame loss under 0.1%, delay p99 at most 100 ms),
//! for each server, thread count and transport, and convene's capacity against Janus's.

use std::collections::BTreeMap;

use crate::peer::Transport;
use crate::report::percentile;
use crate::server::Sfu;
use crate::workload::{Figures, ROOM_SIZE, Setup, Workload};
use crate::{Args, ms, print_ratios, print_servers, print_summaries, run};

/// The capacity convene should reach against Janus's (rooms, convene / Janus).
const CAPACITY_TARGET_RATIO: f64 = 2.0;

/// The capacity two engine threads should reach against one's.
const THREADS_TARGET_RATIO: f64 = 1.7;

/// Frame loss a run must stay under, in percent.
const MAX_FRAME_LOSS_PCT: f64 = 0.1;
/// Delay p99 a run must stay at or under, in microseconds.
const MAX_DELAY_P99_US: u32 = 100_000;

/// Whether a run met the targets, with every participant through and media counted.
fn within_targets(f: &Figures) -> bool {
    let d = &f.delivery;
    d.frames_expected > 0
        && d.frame_loss_pct() < MAX_FRAME_LOSS_PCT
        && percentile(&d.delays_us, 99.0) <= MAX_DELAY_P99_US
        && f.failed_participants == 0
}

/// The meeting runs `all` under `title`, one row each, then what each sent and received.
pub fn print_table(title: &str, all: &[Figures], args: &Args) {
    let p = args.publishing();
    let threads = args.threads_column();
    println!();
    println!("{title}");
    println!(
        "Each participant: VP8 in three simulcast layers at {} fps (f: {} kbps, h: half of it and half the width and height, q: a",
        p.fps, args.video_kbps
    );
    println!(
        "quarter), a keyframe every {} frames, Opus {} B every 20 ms; it hears the {} others of its room (convene: auto-subscribe; janus: one multistream subscription).",
        p.gop,
        p.audio_bytes,
        ROOM_SIZE - 1
    );
    println!(
        "Counted as for the fan-out, per publisher's track and receiver; layers: video frames received from each layer."
    );
    print_servers(all);
    println!();
    println!(
        "| rooms | participants | server |{} transport | window | server CPU | server CPU / packet | packets forwarded | frame loss | RTP loss | delay p50 | delay p99 | delay max | layers q / h / f | bench CPU | client socket drops | server socket drops | targets |",
        threads.head()
    );
    println!(
        "|---:|---:|---|{}---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
        threads.align()
    );
    for f in all {
        let d = &f.delivery;
        let [q, h, full] = d.video_by_layer;
        println!(
            "| {} | {} | {} |{} {} | {:.1} s | {:.0}% | {:.2} µs | {:.0}/s | {:.3}% | {:.3}% | {} | {} | {} | {q} / {h} / {full} | {:.0}% | {} | {} | {} |",
            f.setup.workload.count(),
            f.participants,
            f.setup.server,
            threads.cell(f.setup.threads),
            f.setup.transport,
            f.wall.as_secs_f64(),
            f.cpu_pct(f.server_cpu),
            f.server_us_per_packet(),
            f.packets_per_second(),
            d.frame_loss_pct(),
            d.packet_loss_pct(),
            ms(percentile(&d.delays_us, 50.0)),
            ms(percentile(&d.delays_us, 99.0)),
            ms(d.delays_us.last().copied().unwrap_or(0)),
            f.cpu_pct(f.bench_cpu),
            f.client_socket_drops,
            f.server_socket_drops,
            if within_targets(f) { "met" } else { "missed" },
        );
    }
    print_summaries(all);
    print_ratios(all);
}

/// What one room count gave: the run's figures, or `None` if the run failed.
type Outcome = Option<Figures>;

/// The most rooms this machine can carry at all with the load generator on the same cores: its
/// cores divided by the lowest CPU per room (server and bench together) of any convene run
/// within the targets. A capacity target above it cannot be shown here, whatever the server.
#[derive(Clone, Copy)]
struct Ceiling {
    rooms: usize,
    server_pct: f64,
    bench_pct: f64,
}

impl Ceiling {
    fn of(runs: &[&Figures], transport: Transport, cores: usize) -> Option<Ceiling> {
        let costs = runs
            .iter()
            .filter(|f| {
                f.setup.server == Sfu::Convene
                    && f.setup.transport == transport
                    && within_targets(f)
            })
            .map(|f| {
                let rooms = f.setup.workload.count() as f64;
                (
                    f.cpu_pct(f.server_cpu) / rooms,
                    f.cpu_pct(f.bench_cpu) / rooms,
                )
            });
        Ceiling::lowest(costs, cores)
    }

    /// From each run's CPU per room (server, bench; % of one core), the ceiling at the lowest.
    fn lowest(costs: impl Iterator<Item = (f64, f64)>, cores: usize) -> Option<Ceiling> {
        costs
            .filter(|(server, bench)| server + bench > 0.0)
            .min_by(|a, b| (a.0 + a.1).total_cmp(&(b.0 + b.1)))
            .map(|(server_pct, bench_pct)| Ceiling {
                rooms: (cores as f64 * 100.0 / (server_pct + bench_pct)).floor() as usize,
                server_pct,
                bench_pct,
            })
    }
}

/// Why a missed capacity target that needs `needed` rooms was missed, when the machine's
/// ceiling is below it.
fn beyond(met: bool, needed: usize, ceiling: Option<Ceiling>) -> String {
    match ceiling {
        Some(c) if !met && needed > c.rooms => format!(
            "; it needs {needed} rooms, above this machine's ceiling of {}",
            c.rooms
        ),
        _ => String::new(),
    }
}

/// The end of one capacity search.
struct Capacity {
    server: Sfu,
    transport: Transport,
    threads: Option<usize>,
    /// The most rooms that met the targets (0 if one room did not), and that run.
    rooms: usize,
    at: Outcome,
    /// The fewest rooms above it that missed them, and that run.
    next: usize,
    above: Outcome,
}

/// `--capacity`: for each transport, server and thread count, the most rooms within the
/// targets, searched from the `listed` runs. Prints the probes' table, a capacity line each,
/// each thread count's capacity against the first one's, and convene's against Janus's.
pub async fn capacity(listed: &[Figures], args: &Args, ticks: u64) -> anyhow::Result<()> {
    let mut probes = Vec::new();
    let mut found = Vec::new();
    for &transport in args.transport.list() {
        for (server, threads) in args.servers_over(transport) {
            let setup = |rooms| Setup {
                server,
                workload: Workload::Meeting { rooms },
                transport,
                threads,
                record: None,
            };
            found.push(search(setup, listed, args, ticks, &mut probes).await);
        }
    }
    if !probes.is_empty() {
        print_table("Capacity probes (--capacity)", &probes, args);
    }
    println!();
    for c in &found {
        let names = match c.threads {
            Some(threads) => format!(
                "{}, {}, CONVENE_RTC_THREADS={threads}",
                c.server, c.transport
            ),
            None => format!("{}, {}", c.server, c.transport),
        };
        println!(
            "capacity: {} rooms of {ROOM_SIZE} ({names}: {}; {} rooms: {})",
            c.rooms,
            c.at.as_ref()
                .map_or_else(|| "not even one room met the targets".to_owned(), describe),
            c.next,
            c.above
                .as_ref()
                .map_or_else(|| "the run failed".to_owned(), describe),
        );
    }
    let runs: Vec<&Figures> = listed.iter().chain(&probes).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ceilings: Vec<(Transport, Option<Ceiling>)> = args
        .transport
        .list()
        .iter()
        .map(|&transport| (transport, Ceiling::of(&runs, transport, cores)))
        .collect();
    let ceiling = |transport| {
        ceilings
            .iter()
            .find(|(t, _)| *t == transport)
            .and_then(|(_, c)| *c)
    };
    for (transport, c) in &ceilings {
        if let Some(c) = c {
            println!(
                "machine ceiling over {transport}: {} rooms of {ROOM_SIZE} ({cores} cores at the lowest cost per room of any convene run within the targets, {:.2}% server + {:.2}% bench = {:.2}% of a core; the load generator shares these cores, and alone, with no server at all, would fill them at {} rooms)",
                c.rooms,
                c.server_pct,
                c.bench_pct,
                c.server_pct + c.bench_pct,
                (cores as f64 * 100.0 / c.bench_pct).floor(),
            );
        }
    }
    for convene in found.iter().filter(|c| c.server == Sfu::Convene) {
        let Some(janus) = found
            .iter()
            .find(|c| c.server == Sfu::Janus && c.transport == convene.transport)
        else {
            continue;
        };
        let needed = (CAPACITY_TARGET_RATIO * janus.rooms as f64).ceil() as usize;
        let met = convene.rooms > 0 && convene.rooms >= needed;
        let names = match convene.threads {
            Some(threads) => format!("{}, CONVENE_RTC_THREADS={threads}", convene.transport),
            None => convene.transport.to_string(),
        };
        println!(
            "capacity convene / janus ({names}): {} ({} / {} rooms; target at least {CAPACITY_TARGET_RATIO:.0}: {}{})",
            if janus.rooms == 0 {
                "n/a".to_owned()
            } else {
                format!("{:.2}", convene.rooms as f64 / janus.rooms as f64)
            },
            convene.rooms,
            janus.rooms,
            if met { "met" } else { "missed" },
            beyond(met, needed, ceiling(convene.transport)),
        );
    }
    let [first, rest @ ..] = &args.rtc_threads[..] else {
        return Ok(());
    };
    for &transport in args.transport.list() {
        let rooms = |k: usize| {
            found
                .iter()
                .find(|c| {
                    c.server == Sfu::Convene && c.transport == transport && c.threads == Some(k)
                })
                .map_or(0, |c| c.rooms)
        };
        let base = rooms(*first);
        for &k in rest {
            let ratio = if base == 0 {
                "n/a".to_owned()
            } else {
                format!("{:.2}", rooms(k) as f64 / base as f64)
            };
            let needed = (THREADS_TARGET_RATIO * base as f64).ceil() as usize;
            let met = base > 0 && rooms(k) >= needed;
            println!(
                "capacity(threads={k}) / capacity(threads={first}) over {transport}: {ratio} ({} / {base} rooms; target at least {THREADS_TARGET_RATIO}: {}{})",
                rooms(k),
                if met { "met" } else { "missed" },
                beyond(met, needed, ceiling(transport)),
            );
        }
    }
    Ok(())
}

/// One search: from the `listed` runs of the setup `setup(rooms)` gives (its server, transport and
/// thread count), the largest passing room count under the smallest failing one; doubled until a
/// count fails, then bisected until the two are within 5% (or one room) of each other. Each probe
/// runs on a fresh server and is added to `probes`; a probe that fails to run counts as missing
/// the targets.
async fn search(
    setup: impl Fn(usize) -> Setup,
    listed: &[Figures],
    args: &Args,
    ticks: u64,
    probes: &mut Vec<Figures>,
) -> Capacity {
    let Setup {
        server,
        transport,
        threads,
        ..
    } = setup(0);
    let mut known: BTreeMap<usize, Outcome> = listed
        .iter()
        .filter(|f| f.setup == setup(f.setup.workload.count()))
        .map(|f| (f.setup.workload.count(), Some(f.clone())))
        .collect();
    let passes = |o: &Outcome| o.as_ref().is_some_and(within_targets);
    let mut hi = known.iter().find(|(_, o)| !passes(o)).map(|(&m, _)| m);
    let mut lo = known
        .iter()
        .filter(|&(&m, o)| passes(o) && hi.is_none_or(|hi| m < hi))
        .map(|(&m, _)| m)
        .next_back()
        .unwrap_or(0);
    let next = loop {
        let rooms = match hi {
            None if lo == 0 => 1,
            None => lo * 2,
            Some(hi) if hi - lo > 1 && (hi - lo) * 20 > lo => (lo + hi) / 2,
            Some(hi) => break hi,
        };
        let setup = setup(rooms);
        let outcome = match run(setup, args, ticks).await {
            Ok(figures) => {
                probes.push(figures.clone());
                Some(figures)
            }
            Err(e) => {
                eprintln!("[{setup}] the probe failed: {e:#}");
                None
            }
        };
        if passes(&outcome) {
            lo = rooms;
        } else {
            hi = Some(rooms);
        }
        known.insert(rooms, outcome);
    };
    Capacity {
        server,
        transport,
        threads,
        rooms: lo,
        at: known.remove(&lo).flatten(),
        next,
        above: known.remove(&next).flatten(),
    }
}

/// A run's figures in a line: how much was forwarded at what cost, loss and delay.
fn describe(f: &Figures) -> String {
    let d = &f.delivery;
    format!(
        "{} participants, {:.0} packets forwarded/s, server CPU {:.0}%, {:.2} µs per packet, frame loss {:.3}%, delay p99 {}, bench CPU {:.0}%",
        f.participants,
        f.packets_per_second(),
        f.cpu_pct(f.server_cpu),
        f.server_us_per_packet(),
        d.frame_loss_pct(),
        ms(percentile(&d.delays_us, 99.0)),
        f.cpu_pct(f.bench_cpu),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_is_the_machine_at_the_cheapest_room_seen() {
        // 10 rooms at 30% + 60%, 26 rooms at 61% + 125%: 7.15% a room is the cheaper.
        let costs = [(3.0, 6.0), (61.0 / 26.0, 125.0 / 26.0)];
        let c = Ceiling::lowest(costs.into_iter(), 2).unwrap();
        assert_eq!(c.rooms, 27);
        assert!((c.server_pct - 61.0 / 26.0).abs() < 1e-9);
        assert!(Ceiling::lowest(std::iter::empty(), 2).is_none());
        assert!(Ceiling::lowest([(0.0, 0.0)].into_iter(), 2).is_none());
    }

    #[test]
    fn a_missed_target_is_put_beyond_the_machine_only_when_it_needs_more_than_the_ceiling() {
        let c = Some(Ceiling {
            rooms: 37,
            server_pct: 2.0,
            bench_pct: 3.4,
        });
        assert_eq!(
            beyond(false, 42, c),
            "; it needs 42 rooms, above this machine's ceiling of 37"
        );
        assert_eq!(beyond(false, 30, c), "");
        assert_eq!(beyond(true, 42, c), "");
        assert_eq!(beyond(false, 42, None), "");
    }
}
